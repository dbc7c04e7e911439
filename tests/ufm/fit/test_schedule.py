from ufm.fit.schedule import log_schedule


def test_log_schedule_is_sorted_unique_and_ends_at_steps():
    s = log_schedule(5000, 10)
    assert s[0] == 0 and s[-1] == 5000 and s == sorted(set(s))
    assert 1 in s and 2 in s
    # roughly per_decade points per factor of ten past the first few steps
    assert 8 <= sum(1 for x in s if 100 < x <= 1000) <= 11


def test_log_schedule_small():
    assert log_schedule(0) == [0]
    assert log_schedule(1) == [0, 1]
