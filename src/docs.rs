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
        description = "The back office of a Telegram bot business.\n\nEvery error is `application/problem+json` (schema `ProblemBody`) with a stable `code`: `bad_request`, `malformed_json`, `malformed_form` (400), `invalid_body`, `invalid_field` (422, with `field`), `invalid_query` (400), `unsupported_media_type` (415), `payload_too_large` (413), `unauthorized`, `invalid_token`, `invalid_credentials`, `invalid_telegram_auth` (401), `forbidden`, `email_not_verified` (403), `not_found`, `helpdesk_off` (the helpdesk bridge is off), `unknown_visitor` (404), `invalid_link` (400), `conflict`, `version_conflict`, `ticket_already_open`, `ticket_closed`, `ticket_exists`, `user_exists`, `payment_final`, `payment_not_refundable`, `payment_mismatch`, `insufficient_funds` (409; 402 when buying a subscription), `subscription_active`, `subscription_not_active`, `backfill_running`, `backfill_ended`, `broadcast_started`, `broadcast_ended`, `setting_unreadable` (409), `self_referral`, `amount_too_large` (422), `rate_limited` (429, with `Retry-After`), `bad_gateway` (502: Telegram refused or did not answer), `unavailable` (503, with `Retry-After`), `outcome_unknown` (503: the connection to the database broke while a change was being written, which may or may not have been recorded; look before trying again), `internal` (500)."
    ),
    paths(
        crate::realtime::admin_feed,
        crate::prometheus::scrape,
        crate::telegram::intake::webhook,
        crate::telegram::routes::send_legacy,
        crate::broadcasts::routes::send_message,
        crate::helpdesk::routes::webim_callback
    ),
    components(schemas(crate::error::ProblemBody)),
    nest(
        (path = "/api/v1/auth", api = AdminAuthApi),
        (path = "/api/v1/admin", api = AdminApi),
        (path = "/api/v1/cabinet", api = CabinetApi),
        (path = "/api/v1/cabinet/auth", api = CabinetAuthApi),
        (path = "/api/v1/telegram", api = TelegramApi),
        (path = "/api/v1/integrations", api = IntegrationsApi),
    ),
    modifiers(&Security, &Contract)
)]
pub struct ApiDoc;

#[derive(OpenApi)]
#[openapi(paths(crate::helpdesk::routes::helpdesk_message))]
struct IntegrationsApi;

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
    crate::settings::routes::view,
    crate::settings::routes::replace,
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
    webhooks::routes::start_backfill,
    webhooks::routes::view_backfill,
    webhooks::routes::cancel_backfill,
    crate::telegram::routes::list,
    crate::telegram::files::file,
    crate::broadcasts::routes::create,
    crate::broadcasts::routes::list,
    crate::broadcasts::routes::view,
    crate::broadcasts::routes::recipients,
    crate::broadcasts::routes::cancel,
))]
struct AdminApi;

#[derive(OpenApi)]
#[openapi(paths(crate::telegram::routes::send, crate::telegram::routes::view))]
struct TelegramApi;

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
    crate::telegram::stars::invoice,
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

/// What no handler's annotation says on its own: a unique `operationId` per
/// operation (from its method and path), and every error an operation can
/// answer documented, each with the problem body.
struct Contract;

impl Contract {
    fn operation_id(method: &str, path: &str) -> String {
        let path = path.trim_start_matches("/api/v1/").trim_start_matches('/');
        let words: Vec<String> = path
            .split(['/', '-', '_'])
            .filter(|w| !w.is_empty())
            .map(|w| w.trim_start_matches('{').trim_end_matches('}').to_owned())
            .collect();
        format!("{method}_{}", words.join("_"))
    }

    /// The statuses an operation can answer besides its own: the edge's.
    fn edge_statuses(
        path: &str,
        operation: &utoipa::openapi::path::Operation,
    ) -> Vec<(u16, &'static str)> {
        use utoipa::openapi::{RefOr, path::ParameterIn};
        let parameters = operation.parameters.as_deref().unwrap_or_default();
        let has = |place: ParameterIn| {
            parameters
                .iter()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
        };
        let json_body = operation
            .request_body
            .as_ref()
            .is_some_and(|body| match body {
                RefOr::T(body) => body.content.contains_key("application/json"),
                RefOr::Ref(_) => true,
            });
        let mut statuses = vec![
            (500, "internal error (`internal`)"),
            (
                503,
                "the database is not answering (`unavailable`, with `Retry-After`), or a write's outcome is unknown (`outcome_unknown`)",
            ),
        ];
        if json_body {
            statuses.extend([
                (400, "malformed JSON (`malformed_json`)"),
                (413, "the body is too large (`payload_too_large`)"),
                (415, "not `application/json` (`unsupported_media_type`)"),
                (422, "a field is missing, of the wrong type or invalid (`invalid_body`, `invalid_field`)"),
            ]);
        }
        if has(ParameterIn::Query) {
            statuses.extend([
                (400, "a malformed query parameter (`invalid_query`)"),
                (422, "an invalid query parameter (`invalid_field`)"),
            ]);
        }
        if has(ParameterIn::Path) {
            statuses.push((
                404,
                "nothing by that id (`not_found`), a malformed id included",
            ));
        }
        if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
            statuses.extend([
                (
                    401,
                    "no valid credentials (`unauthorized`, `invalid_token`)",
                ),
                (403, "not allowed for this caller (`forbidden`)"),
            ]);
        }
        if path.starts_with("/api/v1/auth/") || path.starts_with("/api/v1/cabinet/auth/") {
            statuses.push((
                429,
                "too many attempts (`rate_limited`, with `Retry-After`)",
            ));
        }
        statuses
    }
}

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr, ResponseBuilder, content::Content};
        let problem = || Content::new(Some(Ref::from_schema_name("ProblemBody")));
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                ("get", item.get.as_mut()),
                ("put", item.put.as_mut()),
                ("post", item.post.as_mut()),
                ("delete", item.delete.as_mut()),
                ("patch", item.patch.as_mut()),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                operation.operation_id = Some(Self::operation_id(method, path));
                for (status, description) in Self::edge_statuses(path, operation) {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            RefOr::T(ResponseBuilder::new().description(description).build())
                        });
                }
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if status.as_str() >= "400" {
                        response.content.clear();
                        response
                            .content
                            .insert("application/problem+json".to_owned(), RefOr::T(problem()));
                        if response.description.is_empty() {
                            response.description = "a problem (see `code`)".to_owned();
                        }
                    }
                }
            }
        }
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
