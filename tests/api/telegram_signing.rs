//! Telegram Mini App `initData`, signed here as Telegram signs it
//! (independently of the service's verifier). Shared by the tests and the
//! benchmarks (`benches/support` includes this file).

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The made-up bot token of the shared Telegram vectors.
pub const BOT_TOKEN: &str = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// `initData` for `fields`, signed with [`BOT_TOKEN`].
pub fn sign_init_data(fields: &[(&str, String)]) -> String {
    let mut sorted: Vec<_> = fields.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let check = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut secret = hmac::Hmac::<Sha256>::new_from_slice(b"WebAppData").unwrap();
    secret.update(BOT_TOKEN.as_bytes());
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.finalize().into_bytes()).unwrap();
    mac.update(check.as_bytes());
    let hash = hex::encode(mac.finalize().into_bytes());
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        serializer.append_pair(k, v);
    }
    serializer.append_pair("hash", &hash);
    serializer.finish()
}
