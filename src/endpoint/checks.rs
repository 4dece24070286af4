//! What is asked of a server before a job is queued (it lists the model; for multiple choice,
//! its echo log-probabilities are where they belong) and when the report is made (its
//! provenance).

use tokio_util::sync::CancellationToken;

use super::Endpoints;
use super::client::{Answer, EndpointClient, EndpointError};
use super::wire::{
    CompletionRequest, CompletionResponse, Decoding, ModelList, Prompt, PromptInput,
};
use crate::engine::Bos;
use crate::engine::tokenize::TokenizerInfo;
use crate::metrics::{EndpointProvenance, ListedModel};
use crate::models::Resolver;
use crate::spec::{EndpointSpec, PromptFormat};
use crate::validation::FieldError;

/// Models named in an error when the server does not list the one asked for.
const MODELS_NAMED: usize = 20;

/// Prompts whose greedy next token the server is asked for, then asked to score back with echo.
const PROBES: [&str; 3] = [
    "The capital of France is",
    "One, two, three, four,",
    "Once upon a time there",
];

/// A log-probability this much below the best listed still counts as the best (float noise
/// between a decoding step and a prompt pass).
const TOP_TOLERANCE: f64 = 1e-3;

/// The checks of a served side at submission: the policy admits it, its tokenizer reads, the
/// server lists its model and, for multiple choice, the server's echo is aligned. `field` is
/// `old` or `new`.
pub async fn check_served(
    endpoints: &Endpoints,
    resolver: &Resolver,
    spec: &EndpointSpec,
    field: &str,
    multiple_choice: bool,
    bos: Bos,
) -> Vec<FieldError> {
    let at = |name: &str| format!("{field}.endpoint.{name}");
    let mut client = match endpoints.client(spec, field) {
        Ok(client) => client,
        Err(errors) => return errors,
    };
    // A submission answers quickly: one more try at most, not the job's patience.
    client.max_retries = client.max_retries.min(1);
    let tokenizer = match endpoints.tokenizer(resolver, spec) {
        Ok(tokenizer) => tokenizer,
        Err(why) => return vec![FieldError::field(at("tokenizer"), why)],
    };
    let stop = CancellationToken::new();
    let listed = match client.get::<ModelList>("models", &stop).await {
        Ok(answer) => answer.body.data,
        Err(error) => return vec![FieldError::field(at("url"), error.to_string())],
    };
    if !listed.iter().any(|m| m.id == spec.model) {
        let names: Vec<&str> = listed
            .iter()
            .take(MODELS_NAMED)
            .map(|m| m.id.as_str())
            .collect();
        let more = listed.len().saturating_sub(MODELS_NAMED);
        return vec![FieldError::field(
            at("model"),
            format!(
                "the server does not list {:?}; it lists {}{}",
                spec.model,
                if names.is_empty() {
                    "no model".to_string()
                } else {
                    names.join(", ")
                },
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        )];
    }
    if multiple_choice {
        match echo_alignment(&client, spec, &tokenizer.info, bos, &stop).await {
            Ok(Alignment::Misaligned(why)) => {
                return vec![FieldError::field(
                    format!("{field}.endpoint"),
                    format!(
                        "the server's prompt log-probabilities are misaligned, so its \
                         multiple-choice scores would be wrong: {why}"
                    ),
                )];
            }
            Ok(Alignment::Aligned | Alignment::Unchecked) => {}
            Err(error) => return vec![FieldError::field(at("url"), error.to_string())],
        }
    }
    Vec::new()
}

enum Alignment {
    Aligned,
    Misaligned(String),
    /// No probe gave a token that reads back as one token, or the server lists no alternatives.
    Unchecked,
}

/// Asks for the greedy next token after a probe prompt, then for the log-probabilities of the
/// prompt followed by that token, with echo: an aligned server puts its own choice on top at
/// that position. A server that reads each prompt token's log-probability from the token's own
/// position (one too late, as llama-cpp-python 0.3.36's server does) lists there what it would
/// say after the token instead. The majority of the probes that could be checked decides.
async fn echo_alignment(
    client: &EndpointClient,
    spec: &EndpointSpec,
    tokenizer: &TokenizerInfo,
    bos: Bos,
    stop: &CancellationToken,
) -> Result<Alignment, EndpointError> {
    let mut aligned = 0;
    let mut misaligned = Vec::new();
    for probe in PROBES {
        let Some(first) = probe_input(spec, tokenizer, probe, bos) else {
            continue;
        };
        let generated = complete(client, spec, first.clone(), false, stop).await?;
        let Some(text) = generated.body.choices.first().map(|c| c.text.clone()) else {
            continue;
        };
        // The prompt followed by the server's own choice, and where that choice's entry is.
        let (echoed, position) = match first {
            PromptInput::Ids(mut ids) => {
                let Some(token) = single_token(tokenizer, &text) else {
                    continue;
                };
                let position = ids.len();
                ids.push(token);
                (PromptInput::Ids(ids), Position::Index(position))
            }
            PromptInput::Text(prompt) => {
                if text.is_empty() {
                    continue;
                }
                let position = Position::Offset(prompt.chars().count() as i64);
                (PromptInput::Text(format!("{prompt}{text}")), position)
            }
        };
        let scored = complete(client, spec, echoed, true, stop).await?;
        let Some(logprobs) = scored.body.choices.first().and_then(|c| c.logprobs.clone()) else {
            continue;
        };
        let index = match position {
            Position::Index(index) => Some(index),
            Position::Offset(offset) => logprobs
                .text_offset
                .as_ref()
                .and_then(|offsets| offsets.iter().position(|&o| o == offset)),
        };
        let Some(index) = index else { continue };
        let value = logprobs.token_logprobs.get(index).copied().flatten();
        let best = logprobs
            .top_logprobs
            .as_ref()
            .and_then(|top| top.get(index)?.as_ref()?.best());
        match (value, best) {
            (Some(value), Some(best)) if value >= best - TOP_TOLERANCE => aligned += 1,
            (Some(value), Some(best)) => misaligned.push(format!(
                "after {probe:?} it chose {text:?}, and scored back it gives that choice \
                 {value:.3} where its best alternative has {best:.3}"
            )),
            _ => {}
        }
    }
    Ok(if misaligned.len() > aligned {
        Alignment::Misaligned(misaligned.join("; "))
    } else if aligned > 0 {
        Alignment::Aligned
    } else {
        Alignment::Unchecked
    })
}

/// Where the server's choice is in the echo of the prompt followed by it.
enum Position {
    /// Token ids sent: its index.
    Index(usize),
    /// Text sent: its entry's `text_offset`.
    Offset(i64),
}

/// A probe prompt as the side sends prompts.
fn probe_input(
    spec: &EndpointSpec,
    tokenizer: &TokenizerInfo,
    probe: &str,
    bos: Bos,
) -> Option<PromptInput> {
    match spec.prompt_format {
        PromptFormat::TokenIds => tokenizer.encode_with(probe, bos).ok().map(PromptInput::Ids),
        PromptFormat::Text => Some(PromptInput::Text(probe.to_string())),
    }
}

/// The one token whose text is `text`, if it is one.
fn single_token(tokenizer: &TokenizerInfo, text: &str) -> Option<u32> {
    match tokenizer.encode(text).ok()?.as_slice() {
        [token] if tokenizer.decode(&[*token]).ok()? == text => Some(*token),
        _ => None,
    }
}

/// One token greedily after `prompt`; with `echo`, the prompt's log-probabilities too.
async fn complete(
    client: &EndpointClient,
    spec: &EndpointSpec,
    prompt: PromptInput,
    echo: bool,
    stop: &CancellationToken,
) -> Result<Answer<CompletionResponse>, EndpointError> {
    let request = CompletionRequest {
        model: &spec.model,
        prompt: Prompt::One(prompt),
        max_tokens: 1,
        decoding: Decoding::GREEDY,
        echo,
        logprobs: Some(1),
        stop: &[],
        no_repeat_ngram_size: None,
        extra: &spec.extra_body,
    };
    client.post("completions", &request, stop).await
}

/// The model's entry in the server's listing (None when it is not listed), with the server's
/// self-description.
pub async fn listed_model(
    client: &EndpointClient,
    model: &str,
    stop: &CancellationToken,
) -> Result<(Option<ListedModel>, Option<String>), EndpointError> {
    let answer = client.get::<ModelList>("models", stop).await?;
    let server = answer.server();
    let listed = answer.body.data.into_iter().find(|m| m.id == model);
    Ok((listed, server))
}

/// The provenance of a served side, asked of its server when the report is made: its listing
/// of the model and its self-description, and a one-token completion's `system_fingerprint`.
/// A server that cannot be asked is named with why, not a failed report.
pub async fn provenance(
    endpoints: &Endpoints,
    resolver: &Resolver,
    spec: &EndpointSpec,
) -> EndpointProvenance {
    let mut provenance = EndpointProvenance {
        endpoint: spec.url.clone(),
        model: spec.model.clone(),
        server: None,
        system_fingerprint: None,
        listed: None,
        unavailable: None,
    };
    let mut client = match endpoints.client(spec, "endpoint") {
        Ok(client) => client,
        Err(errors) => {
            provenance.unavailable = errors.first().map(|e| e.message.clone());
            return provenance;
        }
    };
    client.max_retries = client.max_retries.min(1);
    let stop = CancellationToken::new();
    match listed_model(&client, &spec.model, &stop).await {
        Ok((listed, server)) => {
            provenance.listed = listed;
            provenance.server = server;
        }
        Err(error) => {
            provenance.unavailable = Some(error.to_string());
            return provenance;
        }
    }
    let first = match spec.prompt_format {
        PromptFormat::Text => PromptInput::Text(PROBES[0].to_string()),
        PromptFormat::TokenIds => PromptInput::Ids(vec![
            endpoints
                .tokenizer(resolver, spec)
                .ok()
                .and_then(|t| t.info.bos.or(t.info.eos.first().copied()))
                .unwrap_or(0),
        ]),
    };
    match complete(&client, spec, first, false, &stop).await {
        Ok(answer) => {
            if provenance.server.is_none() {
                provenance.server = answer.server();
            }
            provenance.system_fingerprint = answer.body.system_fingerprint;
        }
        Err(error) => provenance.unavailable = Some(error.to_string()),
    }
    provenance
}
