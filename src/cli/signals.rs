//! SIGINT and SIGTERM for the commands that clean up after themselves when
//! interrupted (`run`, `shell`, `build`).

use tokio::signal::unix::{SignalKind, signal};

/// SIGINT/SIGTERM that came before [`interrupted`] listened (0: none).
static EARLY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn latch(sig: libc::c_int) {
    EARLY.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// For commands that clean up after themselves when interrupted (`run`,
/// `shell`): from the first moment after parsing, SIGINT and SIGTERM are
/// remembered instead of killing cci outright, so a signal that comes while
/// cci is still starting up still ends in an orderly way (nothing left
/// behind, exit 130/143) once [`interrupted`] listens.
pub fn latch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `latch` only stores into an atomic (async-signal-safe);
        // the sigaction struct is fully initialised before use.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = latch as *const () as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives; yields the signal number.
pub async fn interrupted() -> i32 {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    // Listening now; one that came before is answered at once.
    match EARLY.swap(0, std::sync::atomic::Ordering::SeqCst) {
        libc::SIGINT => return 2,
        libc::SIGTERM => return 15,
        _ => {}
    }
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}
