//! Peak resident memory of this test process, for the tests that bound it (each in its own
//! test binary, so that the peak is theirs).

/// The process's peak resident set size so far, in MiB (`VmHWM`).
pub fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024
}
