"""Markers: `slow` tests take more than about 2 s each on 2 CPU cores (they run in the full suite; the quick
check `python -m pytest -m "not slow"` leaves them out); `minutes` tests run only with --runslow; `gpu` tests
skip themselves without CUDA. The slow tests are listed here (SLOW, by node-id prefix, from `pytest
--durations=60`) rather than decorated one by one, so the list is one place to keep current.

The tests compute with one thread (and so do the processes they start): their products are small, and on a
machine with any other load a second thread makes them several times slower (measured: a K = 4 run under a
registered loss took 2–9 s with 2 threads beside another job, 0.26 s with one)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; inherited by subprocesses
os.environ.setdefault("MKL_NUM_THREADS", "1")
# no disk cache of spherical codes: a test computes what it checks and leaves nothing in the user's ~/.cache
os.environ.setdefault("UFM_CACHE", "off")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SLOW = (
    "tests/ufm/sweeps/test_sweep_safety.py::test_a_worker_that_dies_fails_its_own_run_and_not_the_queued_ones",
    "tests/ufm/distributed/test_parity.py::test_trajectory_equals_the_single_process_run",
    "tests/ufm/fit/test_resume.py::test_a_distributed_run_resumes_on_the_same_and_on_another_process_count",
    "tests/ufm/distributed/test_torchrun.py::test_the_documented_launch_runs_one_problem_on_two_processes",
    "tests/ufm/distributed/test_torchrun.py::test_a_run_that_cannot_be_sharded_ends_with_one_line_from_rank_0",
    "tests/ufm/distributed/test_torchrun.py::test_without_the_separator_torchrun_rejects_ufm_flags",
    "tests/ufm/backbone/test_layers.py::test_the_deep_ufm_twin_is_held_beside_each_layer",
    "tests/ufm/backbone/test_layers.py::test_resnet_stages_and_named_layers",
    "tests/figures/test_layers.py::test_a_tracked_run_is_drawn_and_an_untracked_one_refused",
    "tests/ufm/sweeps/test_sweep_tensorboard.py::test_a_library_sweep_logs_each_run_under_its_id",
    "tests/figures/test_figures.py::test_every_figure_is_drawn_in_smoke_mode",
    "tests/ufm/backbone/test_training.py::test_weight_decay_drives_a_real_network_further_into_collapse",
    "tests/ufm/backbone/test_training.py::test_sigkill_mid_run_then_resume_ends_exactly_like_an_uninterrupted_run",
    "tests/ufm/backbone/test_training.py::test_resume_with_another_configuration_is_refused",
    "tests/ufm/backbone/test_training.py::test_torchrun_two_cpu_processes_measure_the_whole_training_set",
    "tests/ufm/backbone/test_training.py::test_divergence_stops_with_a_clear_message",
    "tests/ufm/backbone/test_train_safety.py::test_under_torchrun",
    "tests/ufm/backbone/test_train_safety.py::test_a_signal_mid_training",
    "tests/ufm/backbone/test_measure.py::test_nc_statistics_reduced_over_two_gloo_processes",
    "tests/test_readme.py::test_readme_python_blocks_run",
    "tests/test_readme.py::test_the_library_blocks_run_as_a_plain_script",
    "tests/analysis/test_uniformity.py::test_maxmin_code_reaches_the_tammes_angles",
    "tests/analysis/test_tracking.py::test_two_gloo_processes",
    "tests/analysis/test_torchmetrics_adapter.py::test_two_gloo_processes",
    "tests/ufm/sweeps/test_sweep_tensorboard.py::test_a_pool_sweep_logs_from_its_worker_processes",
    "tests/ufm/sweeps/test_sweep.py::test_local_pool_and_local_dask_cluster_give_the_same_table",
    "tests/ufm/sweeps/test_sweep.py::test_failures_are_recorded_and_a_restart_skips_finished_runs",
    "tests/ufm/sweeps/test_sweep.py::test_a_corrupted_summary_is_rerun_and_named",
    "tests/ufm/sweeps/test_sweep.py::test_a_second_grid_in_the_same_folder_is_merged",
    "tests/ufm/sweeps/test_sweep.py::test_a_killed_sweep_leaves_no_worker_behind",
    "tests/ufm/sweeps/test_sweep_safety.py::test_a_registered_loss_and_check_reach_the_workers",
    "tests/ufm/sweeps/test_sweep_safety.py::test_two_sweeps_with_one_grid_compute_each_run_once",
    "tests/ufm/sweeps/test_sweep_safety.py::test_two_sweeps_with_different_grids_both_end_in_the_table",
    "tests/ufm/sweeps/test_sweep_safety.py::test_ctrl_c_cancels_the_queued_runs_and_leaves_the_table_current",
    "tests/theory/test_sphere.py::test_one_block_normalized_scale_problem_and_run",
    "tests/ufm/test_api.py::test_the_example_runs_in_memory_and_writes_nothing",
    "tests/ufm/test_docstrings.py::test_docstring_examples[ufm.api]",
    "tests/ufm/cli/test_simulate.py::test_end_to_end_run_prints_table_and_writes_summary",
    "tests/ufm/cli/test_simulate_safety.py::test_an_accuracy_far_from_the_target_is_not_convergence",
    "tests/ufm/test_deep.py::test_a_deep_relu_run_below_the_dnc_objective_is_flagged",
    "tests/ufm/test_deep.py::test_minority_cosine_matches_the_ufm_optimum_and_the_lpm_bounds_the_loss",
    "tests/ufm/test_deep.py::test_critical_ratios_are_monotone_through_vanishing_classifiers",
    "tests/ufm/test_deep.py::test_without_weight_decay_there_is_no_collapse",
    "tests/ufm/checks/test_theory.py::test_imbalanced_ce_at_tiny_weight_decay_is_certified_at_the_run",
    "tests/ufm/checks/test_theory.py::test_counts_give_the_minority_and_seli_blocks",
    "tests/ufm/output/test_summary.py::test_a_deep_linear_run_that_drops_its_one_sample_class_says_so",
    "tests/ufm/test_atlas.py",
    "tests/theory/test_theorems.py::test_deep_linear_ufm_reaches_its_closed_form",
    "tests/theory/test_theorems.py::test_nonnegative_features_reach_the_bias_free_mse_optimum",
    "tests/figures/test_history.py::test_garbled_summary_from_the_command_line_has_no_traceback",
    "tests/figures/test_cli.py::test_bad_out_from_the_command_line_has_no_traceback",
    "tests/examples/",
)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run the tests marked minutes")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="minutes: run with --runslow")
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
        if "minutes" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip)
