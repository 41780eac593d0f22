//! Telegram Stars: a cabinet user asks for an invoice (a top-up of their
//! Stars balance, or a plan priced in Stars); its payload is signed here
//! (user, amount, plan, expiry). Telegram's `pre_checkout_query` is
//! answered ok only for a payload signed here, still valid, for the amount
//! asked; a `successful_payment` is `payment.completed` and
//! `transaction.created` (and the plan bought from that balance, in the same
//! command), once per `telegram_payment_charge_id`.

use actix_web::{HttpResponse, http::StatusCode, post, web};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use utoipa::ToSchema;

use super::bot_api::Answer;
use crate::{
    app::AppState,
    auth::CabinetUser,
    error::{ApiError, Problem},
    ids::UserId,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(invoice);
}

/// The currency of Telegram Stars.
pub const STARS: &str = "XTR";

/// How long an invoice may be paid.
const INVOICE_TTL: chrono::Duration = chrono::Duration::hours(1);

/// The most Stars one invoice asks for.
const MAX_STARS: i64 = 100_000;

/// What a payment is for, as its signed payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub user: UserId,
    pub amount: i64,
    /// A plan to buy with it; `None`: a top-up.
    pub plan: Option<String>,
    pub expires: i64,
}

impl Invoice {
    /// `v1:<user>:<amount>:<expires>:<plan or ->:<signature>`, at most
    /// 128 bytes (Telegram's limit for a payload).
    pub fn sign(&self, key: &[u8]) -> String {
        let body = format!(
            "v1:{}:{}:{}:{}",
            self.user.as_uuid().simple(),
            self.amount,
            self.expires,
            self.plan.as_deref().unwrap_or("-")
        );
        format!("{body}:{}", signature(key, &body))
    }

    /// The invoice a payload names, if it was signed with `key`.
    pub fn verify(payload: &str, key: &[u8]) -> Option<Self> {
        let (body, given) = payload.rsplit_once(':')?;
        let expected = signature(key, body);
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes()).into();
        if !same {
            return None;
        }
        let mut parts = body.split(':');
        if parts.next()? != "v1" {
            return None;
        }
        let user = uuid::Uuid::parse_str(parts.next()?).ok()?;
        let amount = parts.next()?.parse().ok()?;
        let expires = parts.next()?.parse().ok()?;
        let plan = parts.next()?;
        Some(Self {
            user: UserId::from_uuid(user),
            amount,
            plan: (plan != "-").then(|| plan.to_owned()),
            expires,
        })
    }

    /// Why a pre-checkout of `total` `currency` for this invoice at `now`
    /// is refused, if it is.
    pub fn refusal(&self, currency: &str, total: i64, now: DateTime<Utc>) -> Option<&'static str> {
        if currency != STARS || total != self.amount {
            return Some("The amount does not match the invoice.");
        }
        if now.timestamp() > self.expires {
            return Some("This invoice has expired; ask for a new one.");
        }
        None
    }
}

fn signature(key: &[u8], body: &str) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body.as_bytes());
    // 128 bits are plenty for a payload that expires within the hour.
    URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
}

/// The key invoice payloads are signed with, from the service's JWT
/// secret.
pub fn payload_key(jwt_secret: &secrecy::SecretString) -> [u8; 32] {
    use secrecy::ExposeSecret;
    let Ok(mut mac) =
        <Hmac<Sha256> as KeyInit>::new_from_slice(jwt_secret.expose_secret().as_bytes())
    else {
        return [0; 32];
    };
    mac.update(b"telegram stars invoice payload");
    mac.finalize().into_bytes().into()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceIn {
    /// Stars to add to the balance (1 to 100000) …
    pub amount: Option<i64>,
    /// … or a plan priced in Stars (`XTR`) to buy.
    pub plan_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceOut {
    /// Open it in Telegram (`Telegram.WebApp.openInvoice` in a Mini App).
    pub invoice_link: String,
    pub amount: i64,
    pub currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// An invoice for Telegram Stars: a top-up (`amount`) or a plan priced in
/// Stars (`plan_id`). Paid in Telegram, it credits the balance
/// (`payment.completed`) and, for a plan, buys it.
#[utoipa::path(tag = "cabinet", request_body = InvoiceIn, responses((status = 201, body = InvoiceOut), (status = 401), (status = 422), (status = 502, description = "Telegram refused or did not answer"), (status = 503, description = "no bot token is configured")), security(("bearer" = [])))]
#[post("/stars/invoice")]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub async fn invoice(
    state: web::Data<AppState>,
    user: CabinetUser,
    body: web::Json<InvoiceIn>,
) -> Result<HttpResponse, ApiError> {
    let (amount, plan, title) = match (&body.amount, &body.plan_id) {
        (Some(amount), None) => {
            if !(1..=MAX_STARS).contains(amount) {
                return Err(Problem::invalid_field("amount", "1 to 100000 Stars").into());
            }
            (*amount, None, format!("{amount} Stars"))
        }
        (None, Some(plan_id)) => {
            let plan = state
                .config
                .plans
                .iter()
                .find(|p| &p.id == plan_id)
                .ok_or_else(|| ApiError::from(Problem::invalid_field("plan_id", "no such plan")))?;
            if plan.currency != STARS || plan.id.contains(':') || plan.id.len() > 40 {
                return Err(
                    Problem::invalid_field("plan_id", "this plan is not sold for Stars").into(),
                );
            }
            (plan.price, Some(plan.id.clone()), plan.name.clone())
        }
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "Invalid request body",
            )
            .detail("exactly one of `amount` and `plan_id`")
            .into());
        }
    };
    let Some(api) = &state.telegram.api else {
        return Err(
            Problem::unavailable("no bot is configured (SWITCHBOARD_TELEGRAM_BOT_TOKEN)").into(),
        );
    };
    let expires_at = Utc::now() + INVOICE_TTL;
    let payload = Invoice {
        user: user.id,
        amount,
        plan: plan.clone(),
        expires: expires_at.timestamp(),
    }
    .sign(&state.telegram.payload_key);
    let params = json!({
        "title": title,
        "description": match &plan {
            Some(_) => format!("{title}, paid in Telegram Stars"),
            None => format!("{amount} Stars added to your balance"),
        },
        "payload": payload,
        "currency": STARS,
        "prices": [{"label": title, "amount": amount}],
    });
    match api.call("createInvoiceLink", &params).await {
        Answer::Done(serde_json::Value::String(link)) => {
            Ok(HttpResponse::Created().json(InvoiceOut {
                invoice_link: link,
                amount,
                currency: STARS,
                plan_id: plan,
                expires_at,
            }))
        }
        other => {
            tracing::warn!(answer = ?other, "createInvoiceLink failed");
            Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "Telegram did not make the invoice",
            )
            .detail("Telegram refused or did not answer createInvoiceLink; try again")
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_verifies_only_unchanged_and_with_its_key() {
        let issued = Invoice {
            user: UserId::new(),
            amount: 250,
            plan: Some("monthly_stars".into()),
            expires: 1_800_000_000,
        };
        let key = [7u8; 32];
        let payload = issued.sign(&key);
        assert!(payload.len() <= 128, "{payload}");
        assert_eq!(Invoice::verify(&payload, &key), Some(issued.clone()));
        assert_eq!(Invoice::verify(&payload, &[8u8; 32]), None);
        let tampered = payload.replace(":250:", ":25:");
        assert_eq!(Invoice::verify(&tampered, &key), None);
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(issued.refusal("XTR", 250, now), None);
        assert!(issued.refusal("XTR", 249, now).is_some());
        assert!(issued.refusal("USD", 250, now).is_some());
        let later = DateTime::from_timestamp(1_800_000_001, 0).unwrap();
        assert!(issued.refusal("XTR", 250, later).is_some());
        let top_up = Invoice {
            plan: None,
            ..issued
        };
        assert_eq!(Invoice::verify(&top_up.sign(&key), &key), Some(top_up));
    }
}
