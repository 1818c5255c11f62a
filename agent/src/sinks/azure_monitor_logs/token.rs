//! Entra ID access tokens for the Logs Ingestion API: the OAuth 2.0 client-credentials
//! flow (`POST {authority}/{tenant}/oauth2/v2.0/token`, form fields `client_id`,
//! `client_secret`, `scope`, `grant_type=client_credentials`; the answer's `access_token`
//! and `expires_in`), after Microsoft's "Logs Ingestion API" tutorial and the identity
//! platform's client-credentials documentation.
//!
//! A token is cached and fetched again five minutes before it expires (at half its life
//! when it lives shorter), and at once after the platform refused it (a 401). While a
//! refresh fails, an unexpired token keeps being used. The secret is read at each fetch
//! (a rotated secret file takes effect without a restart) and never reaches a log line or
//! an error: errors name the endpoint's status and error code only.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::sinks::delivery::{error_chain, NotReady};

/// Where and how to get tokens.
pub struct TokenSource {
    url: reqwest::Url,
    client_id: String,
    secret: Secret,
    scope: String,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token: String,
    refresh_at: Instant,
    expires_at: Instant,
}

/// The token endpoint's answer (`expires_in` is a number in v2.0, a string in v1.0).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<serde_json::Value>,
}

/// The token endpoint's error (`invalid_client`, `unauthorized_client`, …).
#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenSource {
    /// A source for `tenant` at `authority` (`https://login.microsoftonline.com`).
    pub fn new(
        authority: &reqwest::Url,
        tenant: &str,
        client_id: &str,
        secret: Secret,
        scope: &str,
    ) -> Result<Self, String> {
        let base = authority.as_str().trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/{tenant}/oauth2/v2.0/token"))
            .map_err(|e| format!("token endpoint: {e}"))?;
        Ok(TokenSource {
            url,
            client_id: client_id.to_string(),
            secret,
            scope: scope.to_string(),
            cached: Mutex::new(None),
        })
    }

    /// A token to send: the cached one while it is fresh, else a new one.
    pub async fn get(&self, client: &reqwest::Client) -> Result<String, NotReady> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        match self.fetch(client).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            Err(e) => match cached.as_ref().filter(|c| now < c.expires_at) {
                Some(c) => {
                    tracing::warn!(error = %e.why, "could not refresh the Entra ID token; the current one is still valid");
                    Ok(c.token.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forgets the cached token (the platform refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<Cached, NotReady> {
        let not_ready = |why: String| NotReady {
            why: format!("Entra ID token endpoint: {why}"),
        };
        let secret = self.secret.read().map_err(|e| NotReady {
            why: format!("client secret: {e}"),
        })?;
        let started = Instant::now();
        let response = client
            .post(self.url.clone())
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", secret.as_str()),
                ("scope", self.scope.as_str()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(|e| not_ready(format!("request failed: {}", error_chain(&e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| not_ready(format!("reading the answer: {}", error_chain(&e))))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<TokenError>(&body)
                .ok()
                .map(|e| {
                    let first = e
                        .error_description
                        .as_deref()
                        .and_then(|d| d.lines().next())
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>();
                    format!(" {}: {first}", e.error.unwrap_or_default())
                })
                .unwrap_or_default();
            return Err(not_ready(format!("HTTP {status}{detail}")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| not_ready(format!("not a token answer: {e}")))?;
        if answer.access_token.is_empty() {
            return Err(not_ready("empty access_token".into()));
        }
        let lifetime = match &answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .map_or(Duration::from_secs(3600), Duration::from_secs);
        let early = Duration::from_secs(300).min(lifetime / 2);
        tracing::debug!(
            expires_in_s = lifetime.as_secs(),
            "fetched an Entra ID token"
        );
        Ok(Cached {
            token: answer.access_token,
            refresh_at: started + lifetime - early,
            expires_at: started + lifetime,
        })
    }
}
