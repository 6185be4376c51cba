//! The agent API's JSON bodies: `POST /agent/checkin` and `POST /agent/result`, decoded and
//! checked as `appliance::serve::api::agent` does before anything reaches the store.
//!
//! The appliance crate (axum, SQLite) is not built here: `Checkin` mirrors
//! `appliance::serve::registry::Checkin` field for field (same serde attributes), and `result`
//! repeats the handler's decoding of the result body (`exit` as a number, `stdout`/`stderr` as
//! base64). The board id goes through the same check the registry applies first
//! (`uboot_scripts::bootstrap::check_board_id`). Keep the mirror in step with those two files.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

/// `appliance::serve::registry::Checkin`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[allow(dead_code)]
struct Checkin {
    board: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    macs: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    cpus: Option<serde_json::Value>,
    #[serde(default)]
    memory_kb: Option<serde_json::Value>,
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    uptime: Option<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `appliance::serve::api::agent::result`'s body handling.
fn result(body: &[u8]) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("result body: {e}"))?;
    let exit = v
        .get("exit")
        .and_then(Value::as_i64)
        .ok_or("result body: exit: a number is needed")? as i32;
    let field = |k: &str| -> Result<Vec<u8>, String> {
        match v.get(k).and_then(Value::as_str) {
            None => Ok(Vec::new()),
            Some(s) => B64
                .decode(s.trim())
                .map_err(|e| format!("result body: {k}: not base64: {e}")),
        }
    };
    Ok((exit, field("stdout")?, field("stderr")?))
}

fuzz_target!(|body: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<Checkin>(body) {
        if uboot_scripts::bootstrap::check_board_id(&c.board).is_ok() {
            // What the registry keeps and shows.
            let _ = c.mac.as_deref().map(str::to_ascii_lowercase);
            let back = serde_json::to_vec(&c).expect("a check-in serialises");
            serde_json::from_slice::<Checkin>(&back).expect("and reads back");
        }
    }
    if let Ok((_, stdout, stderr)) = result(body) {
        let _ = (
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr),
        );
    }
});
