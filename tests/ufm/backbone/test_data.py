"""Datasets of the backbone mode: offline loaders, shapes, splits, standardization, and clear errors."""

import numpy as np
import pytest
import torch

from analysis.hierarchy import load
from ufm.backbone.config import TrainConfig
from ufm.backbone.data import DataError, load_dataset


def test_digits_split_is_stratified_and_standardized():
    data = load_dataset(TrainConfig(dataset="digits"))
    assert data.shape == (1, 8, 8) and data.K == 10
    assert len(data.y_train) + len(data.y_test) == 1797
    # every class keeps its 80/20 share (within rounding)
    full = np.bincount(np.concatenate([data.y_train.numpy(), data.y_test.numpy()]), minlength=10)
    assert np.all(np.abs(np.bincount(data.y_test.numpy(), minlength=10) - 0.2 * full) <= 0.5)
    # standardized with the training statistics: mean 0, std 1 over the training set
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1) < 1e-3
    again = load_dataset(TrainConfig(dataset="digits"))
    assert torch.equal(data.x_train, again.x_train)
    other = load_dataset(TrainConfig(dataset="digits", data_seed=1))
    assert not torch.equal(data.y_test, other.y_test)


def test_mnist1d_is_generated_locally_and_leaves_numpy_seeded_state_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data = load_dataset(TrainConfig(dataset="mnist1d"))
    assert np.random.rand() == expected
    assert data.x_train.shape == (4000, 1, 1, 40) and data.x_test.shape == (1000, 1, 1, 40)
    assert set(data.y_train.tolist()) == set(range(10))


def test_synthetic_mixture_shapes_counts_and_seed():
    cfg = TrainConfig(dataset="synthetic", classes=4, per_class=7, test_per_class=3, input_shape=(3, 4, 4))
    data = load_dataset(cfg)
    assert data.x_train.shape == (28, 3, 4, 4) and data.x_test.shape == (12, 3, 4, 4)
    assert data.counts == (7,) * 4
    same = load_dataset(TrainConfig(dataset="synthetic", classes=4, per_class=7, test_per_class=3,
                                    input_shape=(3, 4, 4)))
    assert torch.equal(data.x_train, same.x_train)


def test_hierarchical_mixture_puts_siblings_closer_than_cousins():
    """Class means built along the tree: the mean distance between class means grows with the LCA height."""
    cfg = TrainConfig.from_dict(dict(dataset="synthetic-hier", hierarchy="balanced:3,4", input_shape=(256,),
                                     per_class=400, noise=0.0))
    data = load_dataset(cfg)
    assert data.K == 12
    x = data.x_train.flatten(1).double()
    means = torch.stack([x[data.y_train == k].mean(0) for k in range(12)])
    dist = torch.cdist(means, means)
    lca = torch.tensor(load("balanced:3,4").lca_heights)
    near, far = dist[lca == 1].mean(), dist[lca == 2].mean()
    assert near < 0.75 * far


def test_train_per_class_keeps_the_first_samples_of_each_class():
    data = load_dataset(TrainConfig(dataset="digits", train_per_class=5))
    assert data.counts == (5,) * 10


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
                                          ("cifar100", "cifar-100-python"), ("fashionmnist", "FashionMNIST/raw")])
def test_missing_torchvision_dataset_names_path_and_flag(name, folder, tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(TrainConfig(dataset=name, data_root=str(tmp_path)))
    message = e.value.cli  # the command line's words; the library reads data_root and download=True
    assert str(tmp_path / folder) in message and "--data-root" in message and "--download" in message
    assert "data_root" in str(e.value) and "download=True" in str(e.value)
