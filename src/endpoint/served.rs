//! Scoring a shard's instances on a served model: multiple choice as lm-evaluation-harness's
//! `local-completions` does it (token-id prompts with echo, the continuation's log-probabilities
//! summed), and generation (greedy, and seeded draws) through `/completions` or
//! `/chat/completions`.

use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::Tokenizer;
use super::client::{EndpointClient, EndpointError};
use super::wire::{
    ChatMessage, ChatRequest, ChatResponse, CompletionChoice, CompletionRequest,
    CompletionResponse, Decoding, Prompt, PromptInput, Usage,
};
use crate::engine::sampling::draw_stream;
use crate::engine::{Bos, McItem, McResult};
use crate::spec::{EndpointApi, EndpointSpec, PromptFormat, SamplingSpec};
use rand::Rng;

/// The context length assumed when neither the server nor the tokenizer folder gives one
/// (lm-evaluation-harness's default for API models).
const DEFAULT_CONTEXT: usize = 2048;

/// One side's served model, ready to score a shard.
pub struct ServedModel {
    pub client: EndpointClient,
    pub spec: EndpointSpec,
    pub tokenizer: Arc<Tokenizer>,
    /// Most tokens one request may hold, generated ones included: the server's `max_model_len`
    /// when it lists one, else the tokenizer folder's `max_position_embeddings`.
    pub context: usize,
}

/// Scored results and the tokens they took (prompt and generated), for the throughput counter.
pub struct Scored<T> {
    pub results: Vec<T>,
    pub tokens: u64,
}

/// One echo request's prompt, and where its continuation starts: a token index in ids, a
/// character index in text.
struct EchoPrompt {
    input: PromptInput,
    continuation: usize,
}

impl ServedModel {
    pub fn new(
        client: EndpointClient,
        spec: EndpointSpec,
        tokenizer: Arc<Tokenizer>,
        served_context: Option<u64>,
    ) -> Self {
        let context = served_context
            .map(|n| n as usize)
            .or(tokenizer.context)
            .unwrap_or(DEFAULT_CONTEXT)
            .max(2);
        Self {
            client,
            spec,
            tokenizer,
            context,
        }
    }

    fn tokenize_error(e: impl std::fmt::Display) -> EndpointError {
        EndpointError::Refused(format!("tokenizing a request: {e}"))
    }

    /// Per-choice summed log-probabilities of each item's choices.
    pub async fn multiple_choice(
        &self,
        items: &[McItem],
        bos: Bos,
        stop: &CancellationToken,
    ) -> Result<Scored<McResult>, EndpointError> {
        let mut prompts = Vec::new();
        for item in items {
            let delimiter = item.delimiter.as_deref().unwrap_or(" ");
            for choice in &item.choices {
                let continuation = format!("{delimiter}{choice}");
                prompts.push(match self.spec.prompt_format {
                    PromptFormat::TokenIds => {
                        let (context, continuation) = self
                            .tokenizer
                            .info
                            .encode_pair(&item.prompt, &continuation, bos)
                            .map_err(Self::tokenize_error)?;
                        self.fit_echo(context, continuation)
                    }
                    PromptFormat::Text => {
                        // As the harness's pair encoding: the context's trailing whitespace
                        // belongs to the continuation.
                        EchoPrompt {
                            continuation: item.prompt.trim_end().chars().count(),
                            input: PromptInput::Text(format!("{}{continuation}", item.prompt)),
                        }
                    }
                });
            }
        }
        let per_request = self.spec.prompts_per_request as usize;
        // The futures are made first: a closure making them inside the stream would not be Send
        // for every lifetime, which the worker's boxed futures need.
        let requests: Vec<_> = prompts
            .chunks(per_request)
            .map(|group| self.score_echo(group, stop))
            .collect();
        let answers: Vec<(Vec<super::wire::EchoScore>, u64)> = stream::iter(requests)
            .buffered(self.spec.max_in_flight as usize)
            .try_collect()
            .await?;
        let mut tokens = 0;
        let mut scores = Vec::with_capacity(prompts.len());
        for (group, used) in answers {
            scores.extend(group);
            tokens += used;
        }
        let mut scores = scores.into_iter();
        let results = items
            .iter()
            .map(|item| {
                let own: Vec<_> = scores.by_ref().take(item.choices.len()).collect();
                McResult::from_scores(
                    &item.choices,
                    own.iter().map(|s| s.logprob).collect(),
                    own.iter().map(|s| s.is_greedy.unwrap_or(false)).collect(),
                )
            })
            .collect();
        Ok(Scored { results, tokens })
    }

    /// Keeps the last tokens that fit with the one token the server generates after them (the
    /// harness keeps `max_length`, which a server enforcing its context refuses).
    fn fit_echo(&self, context: Vec<u32>, continuation: Vec<u32>) -> EchoPrompt {
        let room = self.context - 1;
        let n_cont = continuation.len();
        let mut ids = context;
        ids.extend(continuation);
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        EchoPrompt {
            continuation: ids.len().saturating_sub(n_cont).max(1),
            input: PromptInput::Ids(ids),
        }
    }

    async fn score_echo(
        &self,
        group: &[EchoPrompt],
        stop: &CancellationToken,
    ) -> Result<(Vec<super::wire::EchoScore>, u64), EndpointError> {
        let request = CompletionRequest {
            model: &self.spec.model,
            prompt: Prompt::of(group.iter().map(|p| p.input.clone()).collect()),
            max_tokens: 1,
            decoding: Decoding::GREEDY,
            echo: true,
            logprobs: Some(1),
            stop: &[],
            no_repeat_ngram_size: None,
            extra: &self.spec.extra_body,
        };
        let (choices, usage) = self.completions(&request, group.len(), stop).await?;
        let scores = choices
            .iter()
            .zip(group)
            .map(|(choice, prompt)| {
                match &prompt.input {
                    PromptInput::Ids(ids) => choice.echo_score(ids, prompt.continuation),
                    PromptInput::Text(text) => {
                        choice.echo_score_text(text.chars().count(), prompt.continuation)
                    }
                }
                .map_err(|why| EndpointError::Refused(format!("POST /completions: {why}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Ids: the prompt and the one token generated after it.
        let sent: usize = group
            .iter()
            .map(|p| p.input.size() + usize::from(matches!(p.input, PromptInput::Ids(_))))
            .sum();
        Ok((scores, used_tokens(usage.as_ref(), sent)))
    }

    /// POST /completions for `prompts` prompts: one choice each, in prompt order.
    async fn completions(
        &self,
        request: &CompletionRequest<'_>,
        prompts: usize,
        stop: &CancellationToken,
    ) -> Result<(Vec<CompletionChoice>, Option<Usage>), EndpointError> {
        let answer = self
            .client
            .post::<_, CompletionResponse>("completions", request, stop)
            .await?;
        let mut choices = answer.body.choices;
        if choices.len() != prompts {
            return Err(EndpointError::Refused(format!(
                "POST /completions answered {} choices for {prompts} prompts",
                choices.len()
            )));
        }
        choices.sort_by_key(|c| c.index);
        Ok((choices, answer.body.usage))
    }

    /// Greedy answers to `prompts`, at most `request.max_new_tokens` each, cut before the
    /// first of its stop strings.
    pub async fn generate(
        &self,
        prompts: &[String],
        request: &GenerationRequest<'_>,
        stop: &CancellationToken,
    ) -> Result<Scored<String>, EndpointError> {
        let stop_strings = request.stop_strings();
        let answers: Vec<(Vec<String>, u64)> = match self.spec.api {
            EndpointApi::Completions => {
                let inputs = prompts
                    .iter()
                    .map(|prompt| {
                        self.generation_input(prompt, request.max_new_tokens, request.bos)
                    })
                    .collect::<Result<Vec<_>, EndpointError>>()?;
                let per_request = self.spec.prompts_per_request as usize;
                let requests: Vec<_> = inputs
                    .chunks(per_request)
                    .map(|group| {
                        self.complete(
                            group.to_vec(),
                            request,
                            Decoding::GREEDY,
                            &stop_strings,
                            stop,
                        )
                    })
                    .collect();
                stream::iter(requests)
                    .buffered(self.spec.max_in_flight as usize)
                    .try_collect()
                    .await?
            }
            EndpointApi::Chat => {
                let requests: Vec<_> = prompts
                    .iter()
                    .map(|prompt| self.chat(prompt, request, Decoding::GREEDY, &stop_strings, stop))
                    .collect();
                stream::iter(requests)
                    .buffered(self.spec.max_in_flight as usize)
                    .try_collect()
                    .await?
            }
        };
        Ok(collect_texts(answers, &stop_strings, prompts.len()))
    }

    /// `sampling.samples` draws for each prompt, one request per draw with a seed of its own
    /// from (the task's seed, the side, the instance id, the draw's index), so what a draw gets
    /// does not depend on how the instances were batched or sharded.
    pub async fn sample(
        &self,
        prompts: &[(String, String)],
        sampling: &SamplingSpec,
        request: &GenerationRequest<'_>,
        stop: &CancellationToken,
    ) -> Result<Scored<Vec<String>>, EndpointError> {
        let stop_strings = request.stop_strings();
        let samples = sampling.samples as usize;
        let mut inputs = Vec::with_capacity(prompts.len());
        for (_, prompt) in prompts {
            inputs.push(match self.spec.api {
                EndpointApi::Completions => {
                    Some(self.generation_input(prompt, request.max_new_tokens, request.bos)?)
                }
                EndpointApi::Chat => None,
            });
        }
        let draws = prompts
            .iter()
            .zip(&inputs)
            .flat_map(|((id, prompt), input)| {
                (0..sampling.samples).map(move |k| (id, prompt, input, k))
            });
        let requests: Vec<_> = draws
            .map(|(id, prompt, input, k)| {
                let decoding = Decoding {
                    temperature: sampling.temperature,
                    top_p: (sampling.top_p < 1.0).then_some(sampling.top_p),
                    top_k: sampling.top_k,
                    seed: Some(request_seed(sampling.seed, request.side, id, k)),
                };
                let stop_strings = &stop_strings;
                async move {
                    match input {
                        Some(input) => {
                            self.complete(
                                vec![input.clone()],
                                request,
                                decoding,
                                stop_strings,
                                stop,
                            )
                            .await
                        }
                        None => {
                            self.chat(prompt, request, decoding, stop_strings, stop)
                                .await
                        }
                    }
                }
            })
            .collect();
        let answers: Vec<(Vec<String>, u64)> = stream::iter(requests)
            .buffered(self.spec.max_in_flight as usize)
            .try_collect()
            .await?;
        let flat = collect_texts(answers, &stop_strings, prompts.len() * samples);
        let mut texts = flat.results.into_iter();
        let results = (0..prompts.len())
            .map(|_| texts.by_ref().take(samples).collect())
            .collect();
        Ok(Scored {
            results,
            tokens: flat.tokens,
        })
    }

    /// A generation prompt as this side sends it: token ids with room for the answer (the
    /// oldest tokens dropped, as the engine does), or the text.
    fn generation_input(
        &self,
        prompt: &str,
        max_new_tokens: u32,
        bos: Bos,
    ) -> Result<PromptInput, EndpointError> {
        if self.spec.prompt_format == PromptFormat::Text {
            return Ok(PromptInput::Text(prompt.to_string()));
        }
        let keep = self.context.saturating_sub(max_new_tokens as usize).max(1);
        let info = &self.tokenizer.info;
        let mut ids = info
            .encode_prompt(prompt, bos)
            .map_err(Self::tokenize_error)?;
        if ids.len() > keep {
            ids.drain(..ids.len() - keep);
        }
        if ids.is_empty() {
            ids.push(info.bos.or(info.eos.first().copied()).unwrap_or(0));
        }
        Ok(PromptInput::Ids(ids))
    }

    async fn complete(
        &self,
        group: Vec<PromptInput>,
        generation: &GenerationRequest<'_>,
        decoding: Decoding,
        stop_strings: &[String],
        stop: &CancellationToken,
    ) -> Result<(Vec<String>, u64), EndpointError> {
        let n = group.len();
        let sent: usize = group.iter().map(PromptInput::size).sum();
        let no_repeat = generation.no_repeat_ngram_size;
        let request = CompletionRequest {
            model: &self.spec.model,
            prompt: Prompt::of(group),
            max_tokens: generation.max_new_tokens,
            decoding,
            echo: false,
            logprobs: None,
            stop: stop_strings,
            no_repeat_ngram_size: (no_repeat > 0).then_some(no_repeat),
            extra: &self.spec.extra_body,
        };
        let (choices, usage) = self.completions(&request, n, stop).await?;
        let tokens = used_tokens(usage.as_ref(), sent);
        Ok((choices.into_iter().map(|c| c.text).collect(), tokens))
    }

    async fn chat(
        &self,
        prompt: &str,
        generation: &GenerationRequest<'_>,
        decoding: Decoding,
        stop_strings: &[String],
        stop: &CancellationToken,
    ) -> Result<(Vec<String>, u64), EndpointError> {
        let request = ChatRequest {
            model: &self.spec.model,
            messages: [ChatMessage {
                role: "user",
                content: prompt,
            }],
            max_tokens: generation.max_new_tokens,
            decoding,
            stop: stop_strings,
            extra: &self.spec.extra_body,
        };
        let answer = self
            .client
            .post::<_, ChatResponse>("chat/completions", &request, stop)
            .await?;
        let choice = answer.body.choices.into_iter().min_by_key(|c| c.index);
        let text = choice
            .and_then(|c| c.message.content)
            .ok_or_else(|| EndpointError::Refused("POST /chat/completions: no answer".into()))?;
        let tokens = used_tokens(answer.body.usage.as_ref(), 0);
        Ok((vec![text], tokens))
    }
}

/// What every generation request of a side shares.
pub struct GenerationRequest<'a> {
    pub max_new_tokens: u32,
    pub stop_strings: &'a [String],
    pub no_repeat_ngram_size: u32,
    pub bos: Bos,
    /// `old` or `new`: part of each draw's seed.
    pub side: &'a str,
}

impl GenerationRequest<'_> {
    fn stop_strings(&self) -> Vec<String> {
        self.stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }
}

/// The seed a draw's request carries: from the same inputs as a local draw's random stream,
/// below 2^63 (servers take a signed 64-bit seed).
fn request_seed(seed: u64, side: &str, instance: &str, index: u32) -> i64 {
    let mut stream = draw_stream(seed, side, instance, index);
    (stream.random::<u64>() >> 1) as i64
}

/// The answers' texts, each cut at the first stop string, and the tokens they took.
fn collect_texts(
    answers: Vec<(Vec<String>, u64)>,
    stop_strings: &[String],
    n: usize,
) -> Scored<String> {
    let mut tokens = 0;
    let mut results = Vec::with_capacity(n);
    for (texts, used) in answers {
        tokens += used;
        results.extend(
            texts
                .into_iter()
                .map(|text| cut_at_stop(text, stop_strings)),
        );
    }
    Scored { results, tokens }
}

/// The server's own count of the tokens a request took, else what was sent.
fn used_tokens(usage: Option<&Usage>, sent: usize) -> u64 {
    match usage {
        Some(u) if u.prompt_tokens + u.completion_tokens > 0 => {
            u.prompt_tokens + u.completion_tokens
        }
        _ => sent as u64,
    }
}

/// The text before the first stop string: servers cut there already, and one that does not
/// (or that listed fewer stops) is cut here as the engine cuts.
fn cut_at_stop(mut text: String, stop: &[String]) -> String {
    if let Some(cut) = stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_before_the_first_stop_string() {
        let stop = vec!["\n\n".to_string(), "Q:".to_string()];
        assert_eq!(cut_at_stop("42\nQ: next\n\n".into(), &stop), "42\n");
        assert_eq!(cut_at_stop("no stop".into(), &stop), "no stop");
    }

    #[test]
    fn the_server_count_wins_when_it_gives_one() {
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
        };
        assert_eq!(used_tokens(Some(&usage), 99), 13);
        assert_eq!(used_tokens(None, 99), 99);
    }
}
