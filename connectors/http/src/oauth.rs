//! `auth.type=OAUTH2` for HttpSink, Confluent's keys: an access token from
//! `oauth2.token.url` by the client-credentials grant, sent as `Authorization: Bearer …`,
//! kept until nine tenths of its `expires_in` have passed or the API answers 401, then fetched
//! again.
//!
//! The client authenticates to the token URL with `oauth2.client.id` and
//! `oauth2.client.secret` (a PASSWORD) in a Basic header (`oauth2.client.auth.mode=header`,
//! the default) or in the form (`url`); `oauth2.client.scope` is sent when set; the token is
//! the answer's `oauth2.token.property` (`access_token`).

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use sluice_connector_sdk::{Config, TaskError};

pub const TOKEN_URL: &str = "oauth2.token.url";
pub const CLIENT_ID: &str = "oauth2.client.id";
pub const CLIENT_SECRET: &str = "oauth2.client.secret";
pub const AUTH_MODE: &str = "oauth2.client.auth.mode";
pub const SCOPE: &str = "oauth2.client.scope";
pub const TOKEN_PROPERTY: &str = "oauth2.token.property";

pub struct OAuth2 {
    token_url: String,
    client_id: String,
    client_secret: String,
    /// Client credentials in a Basic header (else in the form).
    in_header: bool,
    scope: String,
    property: String,
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    header: HeaderValue,
    refresh_at: Option<Instant>,
}

impl OAuth2 {
    pub fn from_config(config: &Config) -> Result<OAuth2, (String, String)> {
        let err = |key: &str, message: &str| (key.to_string(), message.to_string());
        let token_url = config.get_or(TOKEN_URL, "").trim().to_string();
        match reqwest::Url::parse(&token_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(err(
                    TOKEN_URL,
                    "auth.type OAUTH2 needs an http(s) token URL",
                ))
            }
        }
        let client_id = config.get_or(CLIENT_ID, "").trim().to_string();
        if client_id.is_empty() {
            return Err(err(CLIENT_ID, "auth.type OAUTH2 needs the client's id"));
        }
        let in_header = match config
            .get_or(AUTH_MODE, "header")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "header" => true,
            "url" => false,
            _ => return Err(err(AUTH_MODE, "not header or url")),
        };
        Ok(OAuth2 {
            token_url,
            client_id,
            client_secret: config.get_or(CLIENT_SECRET, "").to_string(),
            in_header,
            scope: config.get_or(SCOPE, "").trim().to_string(),
            property: config
                .get_or(TOKEN_PROPERTY, "access_token")
                .trim()
                .to_string(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The Authorization header: the token held, or a new one.
    pub async fn header(&self, client: &reqwest::Client) -> Result<HeaderValue, TaskError> {
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref() {
            if t.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(t.header.clone());
            }
        }
        let token = self.fetch(client).await?;
        let header = token.header.clone();
        *held = Some(token);
        Ok(header)
    }

    /// Drops the token held (the API refused it).
    pub async fn forget(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<Token, TaskError> {
        // The form, encoded as a URL's query is.
        let mut form = reqwest::Url::parse("http://form/").expect("a constant URL");
        {
            let mut pairs = form.query_pairs_mut();
            pairs.append_pair("grant_type", "client_credentials");
            if !self.scope.is_empty() {
                pairs.append_pair("scope", &self.scope);
            }
            if !self.in_header {
                pairs.append_pair("client_id", &self.client_id);
                pairs.append_pair("client_secret", &self.client_secret);
            }
        }
        let mut request = client
            .post(&self.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.query().unwrap_or_default().to_string());
        if self.in_header {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.client_id, self.client_secret));
            let mut value = HeaderValue::from_str(&format!("Basic {basic}"))
                .map_err(|_| TaskError::fatal(format!("{CLIENT_ID}: not header text")))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let what = format!("the OAuth2 token from {}", self.token_url);
        let response = request
            .send()
            .await
            .map_err(|e| TaskError::retriable(format!("{what}: {}", e.without_url())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TaskError::retriable(format!("{what}: {}", e.without_url())))?;
        if !status.is_success() {
            let code = status.as_u16();
            let message = format!(
                "{what}: answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
            return Err(if code >= 500 || code == 408 || code == 429 {
                TaskError::retriable(message)
            } else {
                TaskError::fatal(format!("{message} (check {CLIENT_ID} and {CLIENT_SECRET})"))
            });
        }
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| TaskError::fatal(format!("{what}: the answer is not JSON: {e}")))?;
        let token = doc
            .get(&self.property)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                TaskError::fatal(format!(
                    "{what}: the answer has no string {:?} ({TOKEN_PROPERTY})",
                    self.property
                ))
            })?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TaskError::fatal(format!("{what}: the token is not header text")))?;
        header.set_sensitive(true);
        let refresh_at = doc
            .get("expires_in")
            .and_then(|e| e.as_f64().or_else(|| e.as_str()?.parse().ok()))
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Instant::now() + Duration::from_secs_f64(s.min(1e9) * 0.9));
        tracing::debug!(token_url = %self.token_url, "fetched an OAuth2 token");
        Ok(Token { header, refresh_at })
    }
}
