//! TOTP codes from pyotp, an implementation independent of Tessera's, and the clock.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A TOTP code from pyotp, an implementation independent of Tessera's, at `unix` seconds.
pub fn pyotp(secret: &str, unix: u64) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
            secret,
            &unix.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyotp failed (install it with `pip install pyotp`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits until at least 12 s remain in the current 30-s window, so a short sequence of
/// steps stays inside it; answers the current time.
pub async fn fresh_window() -> u64 {
    while unix_now() % 30 > 18 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    unix_now()
}
