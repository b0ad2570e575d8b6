//! `GET /api/openapi.json`: the REST API's OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` attributes.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::rest;

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard chat", description = "Native chat REST API. Real-time traffic uses the /ws WebSocket (see the README)."),
    paths(
        rest::register,
        rest::login,
        rest::me,
        rest::users,
        rest::user,
        rest::direct_history,
        rest::send_message,
        rest::rooms,
        rest::create_room,
        rest::room,
        rest::join_room,
        rest::leave_room,
        rest::room_members,
        rest::room_history,
    ),
    components(schemas(rest::ErrorBody, rest::SendBody, rest::Register, rest::Login, rest::NewRoom)),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

pub(crate) async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
