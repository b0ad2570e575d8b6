//! The REST API under `/api`: accounts, users, history, rooms, and an alternative send
//! path. Authenticated calls carry `Authorization: Bearer <JWT>`. Every error is JSON
//! `{"error": "…"}` with a fitting status.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_store::{Conversation, Message, User};
use utoipa::{IntoParams, ToSchema};

use crate::Chat;
use crate::auth::TokenError;
use crate::error::ChatError;
use crate::protocol;
use crate::service::{self, Me};

pub(crate) fn routes() -> Router<Chat> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/me", get(me))
        .route("/users", get(users))
        .route("/users/{id}", get(user))
        .route("/messages", get(direct_history).post(send_message))
        .route("/rooms", get(rooms).post(create_room))
        .route("/rooms/{id}", get(room))
        .route("/rooms/{id}/join", post(join_room))
        .route("/rooms/{id}/leave", post(leave_room))
        .route("/rooms/{id}/members", get(room_members))
        .route("/rooms/{id}/messages", get(room_history))
        .route("/openapi.json", get(crate::openapi::document))
        .fallback(async || ChatError::not_found("No such API endpoint"))
}

/// The caller, from a valid bearer token.
pub(crate) struct Authed(pub Me);

impl FromRequestParts<Chat> for Authed {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, chat: &Chat) -> Result<Self, ChatError> {
        let token = crate::ws::bearer(&parts.headers)
            .ok_or_else(|| ChatError::unauthorized("Missing bearer token"))?;
        let claims = chat.inner.auth.verify(&token).map_err(|e| {
            ChatError::unauthorized(match e {
                TokenError::Expired => "Token expired",
                TokenError::Invalid => "Invalid token",
            })
        })?;
        Ok(Authed(Me {
            id: claims.user_id().unwrap_or_default(),
            username: claims.username,
        }))
    }
}

/// `Json` whose rejections are JSON errors too.
pub(crate) struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ChatError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ChatError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|r: JsonRejection| {
                ChatError::new(r.status(), format!("Invalid JSON body: {}", r.body_text()))
            })
    }
}

/// `Query` with JSON errors.
pub(crate) struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ChatError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|r: QueryRejection| {
                ChatError::bad_request(format!("Invalid query: {}", r.body_text()))
            })
    }
}

/// A numeric id in the path, with a JSON error otherwise.
pub(crate) struct Id(i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ChatError> {
        Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Id(v))
            .map_err(|_: PathRejection| ChatError::bad_request("Ids are integers"))
    }
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Register {
    username: String,
    password: String,
    email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Login {
    username: String,
    password: String,
}

fn session_reply(chat: &Chat, user: &User) -> Result<Value, ChatError> {
    let token = chat.issue_token(user.id, &user.username)?;
    Ok(json!({ "token": token, "user": { "id": user.id, "username": user.username } }))
}

#[utoipa::path(post, path = "/api/auth/register", summary = "Create an account", request_body = Register, responses((status = 201, description = "`{token, user: {id, username}}`"), (status = 400, body = ErrorBody), (status = 409, description = "Username already taken", body = ErrorBody)))]
pub(crate) async fn register(
    State(chat): State<Chat>,
    Body(body): Body<Register>,
) -> Result<Response, ChatError> {
    // Check the server can issue tokens before creating an account nobody can use.
    chat.issue_token(0, "")?;
    let user = service::register(
        &chat,
        body.username.trim(),
        &body.password,
        body.email.as_deref(),
    )
    .await?;
    tracing::info!(user = user.id, "account created");
    Ok((StatusCode::CREATED, Json(session_reply(&chat, &user)?)).into_response())
}

#[utoipa::path(post, path = "/api/auth/login", summary = "Log in", request_body = Login, responses((status = 200, description = "`{token, user: {id, username}}`"), (status = 401, description = "Invalid username or password", body = ErrorBody)))]
pub(crate) async fn login(
    State(chat): State<Chat>,
    Body(body): Body<Login>,
) -> Result<Json<Value>, ChatError> {
    match service::login(&chat, body.username.trim(), &body.password).await? {
        Some(user) => Ok(Json(session_reply(&chat, &user)?)),
        None => Err(ChatError::unauthorized("Invalid username or password")),
    }
}

/// A user with their presence.
#[derive(Serialize)]
struct Presence<'a> {
    #[serde(flatten)]
    user: &'a User,
    online: bool,
}

#[utoipa::path(get, path = "/api/auth/me", summary = "The caller", security(("bearer" = [])), responses((status = 200, description = "`{id, username, email, createdAt, lastSeen, online}`"), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(
    State(chat): State<Chat>,
    Authed(me): Authed,
) -> Result<Json<Value>, ChatError> {
    let account = chat
        .inner
        .store
        .account(me.id)
        .await?
        .ok_or_else(|| ChatError::not_found("User not found"))?;
    let online = chat.online_ids().await.contains(&me.id);
    let mut body = serde_json::to_value(Presence {
        user: &account.user,
        online,
    })
    .map_err(|_| ChatError::internal())?;
    body["email"] = account.email.map(Value::String).unwrap_or(Value::Null);
    Ok(Json(body))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserQuery {
    search: Option<String>,
    limit: Option<u32>,
}

fn page_limit(limit: Option<u32>) -> Result<u32, ChatError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=100) => Ok(n),
        Some(_) => Err(ChatError::bad_request("limit must be between 1 and 100")),
    }
}

#[utoipa::path(get, path = "/api/users", summary = "List or search users", security(("bearer" = [])), params(UserQuery), responses((status = 200, description = "`{users: [{id, username, createdAt, lastSeen, online}]}`"), (status = 401, body = ErrorBody)))]
pub(crate) async fn users(
    State(chat): State<Chat>,
    Authed(_): Authed,
    Params(q): Params<UserQuery>,
) -> Result<Json<Value>, ChatError> {
    let limit = page_limit(q.limit)?;
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let users = chat.inner.store.users(search, limit).await?;
    let online = chat.online_ids().await;
    let users: Vec<Presence> = users
        .iter()
        .map(|user| Presence {
            user,
            online: online.contains(&user.id),
        })
        .collect();
    Ok(Json(json!({ "users": users })))
}

#[utoipa::path(get, path = "/api/users/{id}", summary = "One user", security(("bearer" = [])), params(("id" = i64, Path, description = "User id")), responses((status = 200, description = "`{id, username, createdAt, lastSeen, online}`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn user(
    State(chat): State<Chat>,
    Authed(_): Authed,
    Id(id): Id,
) -> Result<Json<Value>, ChatError> {
    let user = chat
        .inner
        .store
        .user(id)
        .await?
        .ok_or_else(|| ChatError::not_found("User not found"))?;
    let online = chat.online_ids().await.contains(&id);
    Ok(Json(json!(Presence {
        user: &user,
        online
    })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    with: Option<i64>,
    before: Option<i64>,
    limit: Option<u32>,
}

fn history_reply(messages: Vec<Message>, limit: u32) -> Json<Value> {
    let next = (messages.len() == limit as usize)
        .then(|| messages.last().map(|m| m.id))
        .flatten();
    Json(json!({ "messages": messages, "nextCursor": next }))
}

#[utoipa::path(get, path = "/api/messages", summary = "Direct message history, newest first", security(("bearer" = [])), params(HistoryQuery), responses((status = 200, description = "`{messages: [Message], nextCursor}`"), (status = 400, body = ErrorBody)))]
pub(crate) async fn direct_history(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<Value>, ChatError> {
    let with = q
        .with
        .ok_or_else(|| ChatError::bad_request("Missing query parameter: with (a user id)"))?;
    let limit = page_limit(q.limit)?;
    let messages = chat
        .inner
        .store
        .history(Conversation::Direct(me.id, with), q.before, limit)
        .await?;
    Ok(history_reply(messages, limit))
}

#[utoipa::path(post, path = "/api/messages", summary = "Send a message (as over /ws)", security(("bearer" = [])), request_body = SendBody, responses((status = 201, description = "`{message, duplicate: false}`"), (status = 200, description = "Repeated clientMsgId: `{message, duplicate: true}`"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn send_message(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Body(body): Body<Map<String, Value>>,
) -> Result<Response, ChatError> {
    let req = protocol::send_request(&body, chat.inner.config.max_message_bytes)
        .map_err(|r| ChatError::bad_request(r.message))?;
    let (inserted, recipients) = chat.send(&me, &req).await?;
    if !inserted.duplicate {
        chat.deliver(&me, &inserted.message, recipients, None).await;
    }
    let status = if inserted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "message": inserted.message, "duplicate": inserted.duplicate })),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoomsQuery {
    /// Only the caller's rooms.
    mine: Option<bool>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/rooms", summary = "List rooms", security(("bearer" = [])), params(RoomsQuery), responses((status = 200, description = "`{rooms: [{id, name, createdBy, createdAt}]}`")))]
pub(crate) async fn rooms(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Params(q): Params<RoomsQuery>,
) -> Result<Json<Value>, ChatError> {
    let limit = page_limit(q.limit)?;
    let member = q.mine.unwrap_or(false).then_some(me.id);
    Ok(Json(
        json!({ "rooms": chat.inner.store.rooms(member, limit).await? }),
    ))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct NewRoom {
    name: String,
}

#[utoipa::path(post, path = "/api/rooms", summary = "Create a room (the creator joins it)", security(("bearer" = [])), request_body = NewRoom, responses((status = 201, description = "`{id, name, createdBy, createdAt}`"), (status = 400, body = ErrorBody)))]
pub(crate) async fn create_room(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Body(body): Body<NewRoom>,
) -> Result<Response, ChatError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ChatError::bad_request("name must be 1 to 100 characters"));
    }
    let room = chat
        .inner
        .store
        .create_room(name, me.id, switchboard_store::Timestamp::now())
        .await?;
    Ok((StatusCode::CREATED, Json(json!(room))).into_response())
}

#[utoipa::path(get, path = "/api/rooms/{id}", summary = "One room", security(("bearer" = [])), params(("id" = i64, Path, description = "Room id")), responses((status = 200, description = "`{id, name, createdBy, createdAt}`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn room(
    State(chat): State<Chat>,
    Authed(_): Authed,
    Id(id): Id,
) -> Result<Json<Value>, ChatError> {
    let room = chat
        .inner
        .store
        .room(id)
        .await?
        .ok_or_else(|| ChatError::not_found("Room not found"))?;
    Ok(Json(json!(room)))
}

#[utoipa::path(post, path = "/api/rooms/{id}/join", summary = "Join a room", security(("bearer" = [])), params(("id" = i64, Path, description = "Room id")), responses((status = 200, description = "`{roomId, joined}`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn join_room(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Id(id): Id,
) -> Result<Json<Value>, ChatError> {
    let joined = chat
        .inner
        .store
        .join_room(id, me.id, switchboard_store::Timestamp::now())
        .await
        .map_err(|e| match e {
            switchboard_store::StoreError::NotFound(_) => ChatError::not_found("Room not found"),
            other => other.into(),
        })?;
    Ok(Json(json!({ "roomId": id, "joined": joined })))
}

#[utoipa::path(post, path = "/api/rooms/{id}/leave", summary = "Leave a room", security(("bearer" = [])), params(("id" = i64, Path, description = "Room id")), responses((status = 200, description = "`{roomId, left}`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn leave_room(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Id(id): Id,
) -> Result<Json<Value>, ChatError> {
    if chat.inner.store.room(id).await?.is_none() {
        return Err(ChatError::not_found("Room not found"));
    }
    let left = chat.inner.store.leave_room(id, me.id).await?;
    Ok(Json(json!({ "roomId": id, "left": left })))
}

#[utoipa::path(get, path = "/api/rooms/{id}/members", summary = "Members of a room (members only)", security(("bearer" = [])), params(("id" = i64, Path, description = "Room id")), responses((status = 200, description = "`{roomId, members: [user with online]}`"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn room_members(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Id(id): Id,
) -> Result<Json<Value>, ChatError> {
    chat.require_member(me.id, id).await?;
    let online = chat.online_ids().await;
    let mut members = Vec::new();
    for uid in chat.inner.store.room_members(id).await? {
        if let Some(user) = chat.inner.store.user(uid).await? {
            members.push(json!(Presence {
                online: online.contains(&user.id),
                user: &user
            }));
        }
    }
    Ok(Json(json!({ "roomId": id, "members": members })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/rooms/{id}/messages", summary = "Room history, newest first (members only)", security(("bearer" = [])), params(("id" = i64, Path, description = "Room id")), params(PageQuery), responses((status = 200, description = "`{messages: [Message], nextCursor}`"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn room_history(
    State(chat): State<Chat>,
    Authed(me): Authed,
    Id(id): Id,
    Params(q): Params<PageQuery>,
) -> Result<Json<Value>, ChatError> {
    chat.require_member(me.id, id).await?;
    let limit = page_limit(q.limit)?;
    let messages = chat
        .inner
        .store
        .history(Conversation::Room(id), q.before, limit)
        .await?;
    Ok(history_reply(messages, limit))
}

/// Every error body.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) struct ErrorBody {
    error: String,
}

/// `POST /api/messages` and the `chat_message` frame's data.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documentation only: the handler validates a JSON object itself
pub(crate) struct SendBody {
    /// The recipient (or give `roomId`).
    receiver_id: Option<i64>,
    /// The room (or give `receiverId`).
    room_id: Option<i64>,
    content: String,
    /// Default `text`.
    message_type: Option<String>,
    /// Client-chosen id: a repeat from the same sender is not stored twice.
    client_msg_id: Option<String>,
}
