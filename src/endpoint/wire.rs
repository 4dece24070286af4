//! The OpenAI-compatible wire format as the servers we talk to write it: requests we send, and
//! the answers of vLLM, SGLang and llama.cpp's servers read into one shape.
//!
//! Log-probabilities come in several forms: `logprobs.token_logprobs` (one per echoed prompt
//! token, the first null) with `top_logprobs` as a list of `{token: logprob}` maps (OpenAI's
//! legacy completions, vLLM, SGLang, llama-cpp-python); vLLM's `prompt_logprobs`, a list (first
//! null) of maps from token id to a Logprob object `{"logprob", "rank", "decoded_token"}` or a
//! bare number.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// POST {url}/completions.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionRequest<'a> {
    pub model: &'a str,
    /// Token ids: one prompt, or a list of prompts.
    pub prompt: Prompt,
    pub max_tokens: u32,
    #[serde(flatten)]
    pub decoding: Decoding,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    /// Sent as lm-evaluation-harness's `local-completions` sends its generation kwargs; servers
    /// that do not know it ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_repeat_ngram_size: Option<u32>,
    /// The side's `extra_body` (checked at submission not to name any field above).
    #[serde(flatten)]
    pub extra: &'a BTreeMap<String, Value>,
}

/// How the server decodes: greedily (temperature 0), or one draw seeded by the request (vLLM
/// and SGLang seed a request's own generator with `seed`, so a draw does not depend on what
/// else the server is running).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decoding {
    pub temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

impl Decoding {
    pub const GREEDY: Decoding = Decoding {
        temperature: 0.0,
        top_p: None,
        top_k: None,
        seed: None,
    };
}

/// What a prompt is sent as.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// Token ids the worker tokenised (vLLM, SGLang).
    Ids(Vec<u32>),
    /// Text the server tokenises (servers that refuse ids, such as llama-cpp-python's).
    Text(String),
}

/// One prompt, or a list of prompts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    One(PromptInput),
    Many(Vec<PromptInput>),
}

impl PromptInput {
    /// Its length: tokens for ids, characters for text (the server counts those).
    pub fn size(&self) -> usize {
        match self {
            Self::Ids(ids) => ids.len(),
            Self::Text(text) => text.chars().count(),
        }
    }
}

impl Prompt {
    /// One prompt as itself (a list of one would be a batch to some servers), several as a list.
    pub fn of(mut prompts: Vec<PromptInput>) -> Self {
        if prompts.len() == 1 {
            Self::One(prompts.pop().expect("one prompt"))
        } else {
            Self::Many(prompts)
        }
    }
}

/// POST {url}/chat/completions.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: [ChatMessage<'a>; 1],
    pub max_tokens: u32,
    #[serde(flatten)]
    pub decoding: Decoding,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    #[serde(flatten)]
    pub extra: &'a BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub index: usize,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub logprobs: Option<LogProbs>,
    /// vLLM: one entry per prompt token, the first null.
    #[serde(default)]
    pub prompt_logprobs: Option<Vec<Option<BTreeMap<String, PromptLogprob>>>>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogProbs {
    #[serde(default)]
    pub token_logprobs: Vec<Option<f64>>,
    #[serde(default)]
    pub top_logprobs: Option<Vec<Option<TopLogprobs>>>,
    #[serde(default)]
    pub tokens: Option<Vec<String>>,
    /// Where each echoed token starts in the prompt text, in characters (-1 where unknown).
    #[serde(default)]
    pub text_offset: Option<Vec<i64>>,
}

/// The alternatives at one position: `{token: logprob}` (the legacy completions format), or a
/// list of `{"token", "logprob"}` objects (the chat format, which some servers also use here).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TopLogprobs {
    Map(BTreeMap<String, f64>),
    List(Vec<TopLogprob>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopLogprob {
    #[serde(default)]
    pub token: String,
    pub logprob: f64,
}

impl TopLogprobs {
    /// The largest log-probability listed.
    pub fn best(&self) -> Option<f64> {
        let values: Vec<f64> = match self {
            Self::Map(map) => map.values().copied().collect(),
            Self::List(list) => list.iter().map(|t| t.logprob).collect(),
        };
        values.into_iter().reduce(f64::max)
    }
}

/// vLLM's Logprob object, or a bare number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptLogprob {
    Object {
        logprob: f64,
        #[serde(default)]
        rank: Option<u64>,
    },
    Number(f64),
}

impl PromptLogprob {
    fn logprob(&self) -> f64 {
        match self {
            Self::Object { logprob, .. } | Self::Number(logprob) => *logprob,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub choices: Vec<ChatChoice>,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatChoice {
    #[serde(default)]
    pub index: usize,
    pub message: ChatAnswer,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatAnswer {
    #[serde(default)]
    pub content: Option<String>,
}

/// GET {url}/models.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<crate::metrics::ListedModel>,
}

/// The score of one echoed continuation: the summed log-probabilities of its tokens, and
/// whether each was the server's top choice (None when the server lists no alternatives).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoScore {
    pub logprob: f64,
    pub is_greedy: Option<bool>,
}

impl CompletionChoice {
    /// The continuation `ids[context_len..]` of the prompt `ids` this choice echoes: from
    /// `prompt_logprobs` when the server gives them (read by token id), else from
    /// `logprobs.token_logprobs` (read by position).
    pub fn echo_score(&self, ids: &[u32], context_len: usize) -> Result<EchoScore, String> {
        if context_len == 0 || context_len > ids.len() {
            return Err(format!(
                "context of {context_len} tokens in a prompt of {}",
                ids.len()
            ));
        }
        if let Some(prompt) = &self.prompt_logprobs {
            return by_token_id(prompt, ids, context_len);
        }
        let logprobs = self
            .logprobs
            .as_ref()
            .ok_or("the answer carries no logprobs (was echo with logprobs refused?)")?;
        if logprobs.token_logprobs.len() < ids.len() {
            return Err(format!(
                "the answer echoes {} log-probabilities for a prompt of {} tokens",
                logprobs.token_logprobs.len(),
                ids.len()
            ));
        }
        let mut score = EchoScore {
            logprob: 0.0,
            is_greedy: logprobs.top_logprobs.as_ref().map(|_| true),
        };
        for position in context_len..ids.len() {
            let value = logprobs.token_logprobs[position]
                .ok_or_else(|| format!("no log-probability at prompt position {position}"))?;
            score.logprob += value;
            if let Some(top) = &logprobs.top_logprobs {
                let best = top.get(position).and_then(|t| t.as_ref()?.best());
                // As lm-evaluation-harness's local-completions: greedy when no listed
                // alternative beats the token.
                if best.is_some_and(|best| value < best) {
                    score.is_greedy = Some(false);
                }
            }
        }
        Ok(score)
    }
}

impl CompletionChoice {
    /// The continuation of a prompt sent as text: the echoed tokens that start at or after
    /// character `boundary` and before `prompt_chars` (a token that straddles the boundary
    /// belongs to the continuation: it holds some of its text), found by `text_offset`. Servers
    /// that tokenise themselves may or may not list BOS and may generate more than one token
    /// after the prompt; the offsets say which entry is which whatever they do.
    pub fn echo_score_text(
        &self,
        prompt_chars: usize,
        boundary: usize,
    ) -> Result<EchoScore, String> {
        let logprobs = self
            .logprobs
            .as_ref()
            .ok_or("the answer carries no logprobs (was echo with logprobs refused?)")?;
        let offsets = logprobs
            .text_offset
            .as_ref()
            .filter(|o| o.iter().any(|&x| x > 0))
            .ok_or(
                "the answer gives no text offsets, which a prompt sent as text needs: send \
                 token ids (prompt_format \"token_ids\") to this server",
            )?;
        let entries: Vec<usize> = (0..offsets.len())
            .filter(|&i| {
                let start = offsets[i];
                let end = offsets.get(i + 1).copied().unwrap_or(i64::MAX);
                start >= 0 && (start as usize) < prompt_chars && end > boundary as i64
            })
            .collect();
        if entries.is_empty() {
            return Err(format!(
                "no echoed token lies between characters {boundary} and {prompt_chars}"
            ));
        }
        let mut score = EchoScore {
            logprob: 0.0,
            is_greedy: logprobs.top_logprobs.as_ref().map(|_| true),
        };
        for i in entries {
            let value = logprobs
                .token_logprobs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "no log-probability for the token at character {}",
                        offsets[i]
                    )
                })?;
            score.logprob += value;
            let best = logprobs
                .top_logprobs
                .as_ref()
                .and_then(|top| top.get(i)?.as_ref()?.best());
            if best.is_some_and(|best| value < best) {
                score.is_greedy = Some(false);
            }
        }
        Ok(score)
    }
}

fn by_token_id(
    prompt: &[Option<BTreeMap<String, PromptLogprob>>],
    ids: &[u32],
    context_len: usize,
) -> Result<EchoScore, String> {
    if prompt.len() < ids.len() {
        return Err(format!(
            "prompt_logprobs has {} entries for a prompt of {} tokens",
            prompt.len(),
            ids.len()
        ));
    }
    let mut score = EchoScore {
        logprob: 0.0,
        is_greedy: Some(true),
    };
    for position in context_len..ids.len() {
        let entry = prompt[position]
            .as_ref()
            .and_then(|alternatives| alternatives.get(&ids[position].to_string()))
            .ok_or_else(|| {
                format!(
                    "prompt_logprobs has no entry for token {} at position {position}",
                    ids[position]
                )
            })?;
        score.logprob += entry.logprob();
        let greedy = match entry {
            PromptLogprob::Object {
                rank: Some(rank), ..
            } => *rank == 1,
            _ => {
                let best = prompt[position]
                    .iter()
                    .flat_map(|m| m.values())
                    .map(PromptLogprob::logprob)
                    .reduce(f64::max);
                best.is_none_or(|best| entry.logprob() >= best)
            }
        };
        if !greedy {
            score.is_greedy = Some(false);
        }
    }
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(json: &str) -> CompletionChoice {
        let response: CompletionResponse = serde_json::from_str(json).unwrap();
        response.choices.into_iter().next().unwrap()
    }

    #[test]
    fn echoed_token_logprobs_are_read_by_position_with_greediness_from_the_top_alternatives() {
        // Prompt [5, 6, 7, 8] with context [5, 6]: the continuation is positions 2 and 3; the
        // fifth entry is the generated token, never part of the score.
        let echoed = choice(
            r#"{"choices": [{"index": 0, "text": "abcd!", "logprobs": {
                "tokens": ["a", "b", "c", "d", "!"],
                "token_logprobs": [null, -1.5, -0.25, -2.0, -0.1],
                "top_logprobs": [null, {"b": -1.5}, {"c": -0.25}, {"x": -1.0, "d": -2.0}, {"!": -0.1}]
            }}]}"#,
        );
        let score = echoed.echo_score(&[5, 6, 7, 8], 2).unwrap();
        assert_eq!(score.logprob, -2.25);
        assert_eq!(score.is_greedy, Some(false));
        let score = echoed.echo_score(&[5, 6, 7], 2).unwrap();
        assert_eq!(score.logprob, -0.25);
        assert_eq!(score.is_greedy, Some(true));
        // Too short an echo, a null inside the continuation, no context: errors, never zeros.
        assert!(echoed.echo_score(&[5, 6, 7, 8, 9, 10], 2).is_err());
        assert!(echoed.echo_score(&[5, 6], 0).is_err());
        let hole = choice(r#"{"choices": [{"logprobs": {"token_logprobs": [null, null, -1.0]}}]}"#);
        assert!(hole.echo_score(&[1, 2, 3], 1).is_err());
        // No alternatives listed: greediness unknown.
        assert_eq!(hole.echo_score(&[1, 2, 3], 2).unwrap().is_greedy, None);
    }

    #[test]
    fn vllm_prompt_logprobs_are_read_by_token_id_and_rank() {
        let vllm = choice(
            r#"{"choices": [{"index": 0, "text": "", "logprobs": null,
                "prompt_logprobs": [null,
                    {"6": {"logprob": -3.0, "rank": 2, "decoded_token": " b"},
                     "9": {"logprob": -0.5, "rank": 1, "decoded_token": " z"}},
                    {"7": {"logprob": -0.75, "rank": 1, "decoded_token": " c"}}]}]}"#,
        );
        let score = vllm.echo_score(&[5, 6, 7], 1).unwrap();
        assert_eq!(score.logprob, -3.75);
        assert_eq!(score.is_greedy, Some(false));
        let score = vllm.echo_score(&[5, 6, 7], 2).unwrap();
        assert_eq!((score.logprob, score.is_greedy), (-0.75, Some(true)));
        // A token the entry does not list is an error naming it.
        let error = vllm.echo_score(&[5, 8, 7], 1).unwrap_err();
        assert!(error.contains("token 8 at position 1"), "{error}");
        // Bare numbers instead of Logprob objects: greedy when nothing listed beats it.
        let bare = choice(r#"{"choices": [{"prompt_logprobs": [null, {"6": -0.5, "2": -1.5}]}]}"#);
        assert_eq!(
            bare.echo_score(&[5, 6], 1).unwrap(),
            EchoScore {
                logprob: -0.5,
                is_greedy: Some(true)
            }
        );
    }

    #[test]
    fn top_logprobs_as_lists_of_objects_are_read_too() {
        let listed = choice(
            r#"{"choices": [{"logprobs": {"token_logprobs": [null, -0.5],
                "top_logprobs": [null, [{"token": "x", "logprob": -0.5}, {"token": "y", "logprob": -0.9}]]}}]}"#,
        );
        assert_eq!(
            listed.echo_score(&[1, 2], 1).unwrap(),
            EchoScore {
                logprob: -0.5,
                is_greedy: Some(true)
            }
        );
    }

    #[test]
    fn one_prompt_is_sent_as_itself_several_as_a_list() {
        let ids = |v: &[u32]| PromptInput::Ids(v.to_vec());
        let one = serde_json::to_value(Prompt::of(vec![ids(&[1, 2])])).unwrap();
        assert_eq!(one, serde_json::json!([1, 2]));
        let many = serde_json::to_value(Prompt::of(vec![ids(&[1]), ids(&[2, 3])])).unwrap();
        assert_eq!(many, serde_json::json!([[1], [2, 3]]));
        let text = serde_json::to_value(Prompt::of(vec![PromptInput::Text("Hi".into())])).unwrap();
        assert_eq!(text, serde_json::json!("Hi"));
    }

    /// The answers of real servers (llama-cpp-python, the vLLM wire-format stand-in) and the
    /// documented formats of SGLang and OpenAI, in tests/fixtures/endpoint/responses, each with
    /// the continuation log-probability a correct client reads from it.
    #[test]
    fn every_recorded_server_answer_gives_the_continuation_its_index_names() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/endpoint");
        let read = |path: std::path::PathBuf| -> Value {
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        let reference = read(dir.join("reference.json"));
        let context = reference["example"]["context"].as_str().unwrap();
        let index = read(dir.join("responses/index.json"));
        let mut checked = 0;
        for entry in index.as_array().unwrap() {
            let file = entry["file"].as_str().unwrap();
            let Some(expected) = entry["continuation_logprob"].as_f64() else {
                continue;
            };
            let response: CompletionResponse =
                serde_json::from_value(read(dir.join("responses").join(file))).unwrap();
            let choice = &response.choices[0];
            let score = match entry["request"]["prompt"].as_str() {
                // Sent as text: found by the tokens' text offsets.
                Some(prompt) => {
                    assert!(prompt.starts_with(context), "{file}");
                    choice.echo_score_text(prompt.chars().count(), context.chars().count())
                }
                None => {
                    let ids: Vec<u32> =
                        serde_json::from_value(entry["prompt_token_ids"].clone()).unwrap();
                    let context_len = entry["context_length"].as_u64().unwrap() as usize;
                    choice.echo_score(&ids, context_len)
                }
            }
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                (score.logprob - expected).abs() < 1e-9,
                "{file}: {} against {expected}",
                score.logprob
            );
            checked += 1;
        }
        // llama-cpp-python twice (one answer running past max_tokens), the stand-in twice
        // (echo and prompt_logprobs), SGLang and OpenAI.
        assert_eq!(checked, 6);
    }
}
