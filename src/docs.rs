//! The OpenAPI document (generated from the handlers) at `/openapi.json`,
//! and an interactive reference at `/docs` (assets built into the binary).

use actix_web::web;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

use crate::{admin, auth, cabinet, ledger, referrals, subscriptions, tickets, users, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "The back office of a Telegram bot business.\n\nEvery error is `application/problem+json` (schema `ProblemBody`) with a stable `code`: `bad_request`, `malformed_json` (400), `invalid_body`, `invalid_field` (422, with `field`), `invalid_query` (400), `unsupported_media_type` (415), `payload_too_large` (413), `unauthorized`, `invalid_token`, `invalid_credentials`, `invalid_telegram_auth` (401), `forbidden`, `email_not_verified` (403), `not_found` (404), `invalid_link` (400), `conflict`, `version_conflict`, `ticket_already_open`, `ticket_closed`, `ticket_exists`, `user_exists`, `payment_final`, `payment_not_refundable`, `payment_mismatch`, `insufficient_funds` (409; 402 when buying a subscription), `subscription_active`, `subscription_not_active` (409), `self_referral`, `amount_too_large` (422), `rate_limited` (429, with `Retry-After`), `unavailable` (503, with `Retry-After`), `outcome_unknown` (503: the connection to the database broke while a change was being written, which may or may not have been recorded; look before trying again), `internal` (500)."
    ),
    paths(crate::realtime::admin_feed, crate::prometheus::scrape),
    components(schemas(crate::error::ProblemBody)),
    nest(
        (path = "/api/v1/auth", api = AdminAuthApi),
        (path = "/api/v1/admin", api = AdminApi),
        (path = "/api/v1/cabinet", api = CabinetApi),
        (path = "/api/v1/cabinet/auth", api = CabinetAuthApi),
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

#[derive(OpenApi)]
#[openapi(paths(
    auth::routes::login,
    auth::routes::refresh,
    auth::routes::logout,
    auth::routes::change_password,
))]
struct AdminAuthApi;

#[derive(OpenApi)]
#[openapi(paths(
    admin::me,
    admin::api_keys::list,
    admin::api_keys::create,
    admin::api_keys::revoke,
    admin::accounts::list,
    admin::accounts::create_route,
    admin::accounts::update,
    admin::events::browse,
    admin::stats::stats,
    tickets::admin_routes::list,
    tickets::admin_routes::view,
    tickets::admin_routes::reply,
    tickets::admin_routes::set_status,
    tickets::admin_routes::set_priority,
    tickets::admin_routes::assign,
    ledger::routes::record_payment,
    ledger::routes::refund_payment,
    ledger::routes::list_payments,
    ledger::routes::top_up,
    ledger::routes::withdraw,
    ledger::routes::user_ledger,
    users::admin_routes::list,
    users::admin_routes::view,
    users::admin_routes::edit,
    users::admin_routes::block,
    users::admin_routes::unblock,
    subscriptions::routes::list,
    webhooks::routes::stats,
    webhooks::routes::create,
    webhooks::routes::list,
    webhooks::routes::view,
    webhooks::routes::edit,
    webhooks::routes::remove,
    webhooks::routes::enable,
    webhooks::routes::disable,
    webhooks::routes::reveal_secret,
    webhooks::routes::rotate_secret,
    webhooks::routes::send_test,
    webhooks::routes::deliveries,
    webhooks::routes::resend,
    webhooks::routes::recover,
))]
struct AdminApi;

#[derive(OpenApi)]
#[openapi(paths(
    cabinet::me,
    tickets::cabinet_routes::list,
    tickets::cabinet_routes::open,
    tickets::cabinet_routes::view,
    tickets::cabinet_routes::add_message,
    ledger::routes::my_balance,
    ledger::routes::my_transactions,
    ledger::routes::my_payments,
    subscriptions::routes::plans,
    subscriptions::routes::mine,
    subscriptions::routes::purchase,
    subscriptions::routes::renew,
    subscriptions::routes::cancel,
    referrals::mine,
    crate::realtime::cabinet_feed,
))]
struct CabinetApi;

#[derive(OpenApi)]
#[openapi(paths(
    cabinet::auth::mini_app,
    cabinet::auth::login_widget,
    cabinet::auth::register,
    cabinet::auth::verify_email,
    cabinet::auth::verify_email_page,
    cabinet::auth::reset_password_page,
    cabinet::auth::forgot_password_page,
    cabinet::auth::email_login,
    cabinet::auth::forgot_password,
    cabinet::auth::reset_password,
    cabinet::auth::refresh,
    cabinet::auth::logout,
))]
struct CabinetAuthApi;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// `/docs` (Swagger UI) and the document it reads, `/openapi.json`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()));
}
