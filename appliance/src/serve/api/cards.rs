//! New boards and their cards: `POST /api/v1/boards` creates a board (discovered, approved)
//! with a generated card token, answered once and stored only as its sha256;
//! `POST /api/v1/boards/{id}/sdcard` answers that board's SD-card image, built by
//! [`uboot_scripts::sdcard`] exactly as `labboot sdcard` builds it, for the caller who holds
//! the board's token.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uboot_scripts::bootstrap::{check_board_id, Identity};
use uboot_scripts::image::{timestamp, Arch};
use uboot_scripts::sdcard::{build_sdcard, SdCardSpec, DEFAULT_SIZE};

use super::error::{blocking, ApiError};
use super::views;
use crate::serve::App;
use crate::store::Board;

/// Longest device type accepted.
const MAX_DEVICE_TYPE: usize = 100;

/// The body of `POST /boards`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBoard {
    id: String,
    device_type: String,
}

/// The body of `POST /boards/{id}/sdcard`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardRequest {
    token: String,
    #[serde(default = "default_arch")]
    arch: String,
    #[serde(default)]
    mac: Option<String>,
}

fn default_arch() -> String {
    "arm64".into()
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new card token: 32 random bytes from the thread's CSPRNG, as 64 hex digits.
fn new_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

fn check_device_type(t: &str) -> Result<(), ApiError> {
    if t.is_empty() {
        return Err(ApiError::bad_request("device_type is empty"));
    }
    if t.len() > MAX_DEVICE_TYPE {
        return Err(ApiError::bad_request(format!(
            "device_type is {} characters long; at most {MAX_DEVICE_TYPE} are allowed",
            t.len()
        )));
    }
    if let Some(bad) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::bad_request(format!(
            "device_type contains {bad:?}; allowed are ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// `POST /boards` (body `{"id": …, "device_type": …}`): `201 {board…, "token": …}`; the token
/// is shown this once. 409 when the id is taken.
pub async fn create(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let req: NewBoard = parse_body(&body)?;
    check_board_id(&req.id).map_err(|e| ApiError::bad_request(format!("id: {e}")))?;
    check_device_type(&req.device_type)?;
    let a = Arc::clone(&app);
    let (board, token) = blocking(move || {
        // One creation at a time, so two requests for one id cannot both succeed.
        static CREATE: Mutex<()> = Mutex::new(());
        let _one = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        if a.registry.configured(&req.id).is_some() || a.store.board(&req.id)?.is_some() {
            return Err(ApiError::conflict(format!("board {} exists", req.id)));
        }
        let token = new_token();
        let mut b = Board::new(&req.id, &req.device_type);
        b.approved = true;
        b.token_sha256 = Some(sha256_hex(&token));
        a.store.put_board(&b)?;
        a.store.add_event(
            &b.id,
            "state",
            &format!(
                "added through the API as {}; approved; card token issued",
                b.device_type
            ),
        )?;
        tracing::info!(board = %b.id, device_type = %b.device_type, "board added through the API");
        Ok((b, token))
    })
    .await?;
    app.wake.notify_one();
    let mut v = views::board(&board);
    v["token"] = Value::String(token);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `POST /boards/{id}/sdcard` (body `{"token": …, "arch": "arm64", "mac": …}`): the card image
/// as an attachment; 403 when the token is not the board's.
pub async fn sdcard(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CardRequest = parse_body(&body)?;
    let arch: Arch = req
        .arch
        .parse()
        .map_err(|e: uboot_scripts::image::UnknownArch| ApiError::bad_request(e.to_string()))?;
    let mac = req.mac.as_deref().map(str::trim).filter(|m| !m.is_empty());
    let identity = Identity::new(&id, &req.token, mac)
        .map_err(|e| ApiError::bad_request(format!("identity: {e}")))?;
    let image = blocking(move || {
        let board = app
            .store
            .board(&id)?
            .ok_or_else(|| ApiError::not_found(format!("no board {id}")))?;
        // Hashes on both sides: the comparison's time says nothing about the secret.
        let given = sha256_hex(&identity.board_token);
        let known = match app.registry.configured(&id) {
            Some(c) => sha256_hex(&c.config.token),
            None => board.token_sha256.clone().ok_or_else(|| {
                ApiError::conflict(format!("board {id} has no card token on record"))
            })?,
        };
        if given != known {
            let _ = app
                .store
                .add_event(&id, "auth", "SD-card image refused: wrong token");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the token is not board {id}'s card token"),
            ));
        }
        let time = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => timestamp::source_date(Some(&v), 0).0,
            Err(_) => 0,
        };
        let spec = SdCardSpec {
            identity,
            arch,
            size: DEFAULT_SIZE,
            time,
        };
        let image = build_sdcard(&spec)
            .map_err(|e| ApiError::internal(format!("board {id}: SD-card image: {e}")))?;
        app.store.add_event(
            &id,
            "card",
            &format!("SD-card image built ({arch}, {} MiB)", DEFAULT_SIZE >> 20),
        )?;
        tracing::info!(board = %id, %arch, bytes = image.len(), "api: SD-card image built");
        Ok((id, image))
    })
    .await;
    let (id, image) = image?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-sdcard.img\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        image,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert!(Identity::new("x", &a, None).is_ok());
    }

    #[test]
    fn device_types_are_checked() {
        assert!(check_device_type("labboot-qemu-arm64").is_ok());
        assert!(check_device_type("").is_err());
        assert!(check_device_type("a b").is_err());
        assert!(check_device_type(&"x".repeat(101)).is_err());
    }

    #[test]
    fn bodies_refuse_unknown_fields() {
        assert!(parse_body::<NewBoard>(br#"{"id":"a","device_type":"t"}"#).is_ok());
        let e = parse_body::<NewBoard>(br#"{"id":"a","device_type":"t","x":1}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let c: CardRequest = parse_body(br#"{"token":"t"}"#).unwrap();
        assert_eq!((c.arch.as_str(), c.mac), ("arm64", None));
    }
}
