//! A process whose SIGPROF is already taken: the agent starts anyway, logs one warning, leaves
//! the other handler in place, and the program runs on unprofiled. (Its own process: the
//! signal disposition is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static FOREIGN_CALLS: AtomicUsize = AtomicUsize::new(0);

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            WARNINGS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

extern "C" fn foreign_handler(_: libc::c_int) {
    FOREIGN_CALLS.fetch_add(1, Ordering::Relaxed);
}

fn sigprof_handler() -> usize {
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old),
            0
        );
        old.sa_sigaction
    }
}

#[test]
fn a_taken_sigprof_leaves_the_program_running_unprofiled() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let foreign = foreign_handler as *const () as usize;
    unsafe { assert_ne!(libc::signal(libc::SIGPROF, foreign), libc::SIG_ERR) };

    // The server is never reached: nothing is sampled, so nothing is pushed.
    let running = kiln_sdk::Agent::builder("http://127.0.0.1:9", "fallback-test")
        .build()
        .unwrap()
        .start()
        .expect("the agent starts without its sampler");
    let _tags = kiln_sdk::tag_wrapper([("still", "works")]);
    assert_eq!(
        sigprof_handler(),
        foreign,
        "the other handler is left in place"
    );
    // CPU time a 100 Hz timer would have turned into some 20 signals.
    let end = std::time::Instant::now() + std::time::Duration::from_millis(200);
    let mut x = 0u64;
    while std::time::Instant::now() < end {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    running.stop().unwrap();

    let warnings = WARNINGS.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("SIGPROF") && warnings[0].contains("unprofiled"),
        "{warnings:?}"
    );
    // No CPU timer was armed: the other handler was never called.
    assert_eq!(FOREIGN_CALLS.load(Ordering::Relaxed), 0);
}
