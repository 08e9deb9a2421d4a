"""The worker's restart backoff, shared by engines and rpc-servers."""

from corral.worker.runtime import RestartBackoff


def test_doubles_up_to_the_cap_and_starts_over_after_a_stable_run() -> None:
    backoff = RestartBackoff(1.0, 5.0, 60.0)
    assert [backoff.after(0.1) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.after(61.0) == 1.0
    assert backoff.after(0.1) == 2.0
