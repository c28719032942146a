use super::*;

#[test]
fn backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    let quick = Duration::from_millis(10);
    let waits: Vec<u128> = (0..6)
        .map(|_| backoff.after_crash(quick).as_millis())
        .collect();
    assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
    assert_eq!(backoff.after_crash(HEALTHY_RUN).as_millis(), 250);
    assert_eq!(backoff.after_crash(quick).as_millis(), 500);
}

#[test]
fn a_cap_below_the_first_wait_is_raised_to_it() {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
    assert_eq!(backoff.after_crash(Duration::ZERO), Duration::from_secs(1));
    assert_eq!(backoff.after_crash(Duration::ZERO), Duration::from_secs(1));
}

#[test]
fn exits_are_described_for_people() {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        describe_exit(Ok(ExitStatus::from_raw(9))),
        "was killed by signal 9"
    );
    assert_eq!(
        describe_exit(Ok(ExitStatus::from_raw(3 << 8))),
        "exited with code 3"
    );
}
