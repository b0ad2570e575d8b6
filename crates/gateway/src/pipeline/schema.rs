//! The schema stages: resolve the platform and check the envelope, then the platform's own
//! message or credentials schema.

use async_trait::async_trait;

use switchboard_protocol::Validator;

use super::{Kind, Rejection, Request, Stage, StageContext};

/// Resolves the platform from `@context` and checks the envelope schema.
pub struct Envelope;

#[async_trait]
impl Stage for Envelope {
    fn name(&self) -> &'static str {
        "envelope"
    }

    async fn run(&self, req: &mut Request, cx: &StageContext<'_>) -> Result<(), Rejection> {
        let platform = cx.validator.resolve(&req.activity)?;
        req.platform = Some(platform);
        if req.kind == Kind::Credentials {
            Validator::check_credentials_type(&req.activity)?;
        }
        cx.validator.check_envelope(platform, &req.activity)?;
        Ok(())
    }
}

/// The platform's `messages` schema and verb list, or its `credentials` schema.
pub struct PlatformSchema;

#[async_trait]
impl Stage for PlatformSchema {
    fn name(&self) -> &'static str {
        "platform-schema"
    }

    async fn run(&self, req: &mut Request, cx: &StageContext<'_>) -> Result<(), Rejection> {
        let Some(platform) = req.platform else {
            return Err(Rejection("unable to resolve platform from @context".into()));
        };
        match req.kind {
            Kind::Message => cx.validator.check_message(platform, &req.activity)?,
            Kind::Credentials => cx.validator.check_credentials(platform, &req.activity)?,
        }
        Ok(())
    }
}
