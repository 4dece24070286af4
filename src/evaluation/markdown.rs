//! report.md: a summary a pipeline can paste into a pull request, verdict first.

use std::fmt::Write;

use std::collections::HashMap;

use super::InstanceInput;
use crate::domain::{InstanceRecord, SideResult};
use crate::metrics::{Interval, Report, SampledReport, SideProvenance, is_known_gate_metric};
use crate::store::Job;

const WORST_SLICES: usize = 5;

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{:.2}%", v * 100.0))
}

fn num(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.4}"))
}

fn interval(value: Option<Interval>) -> String {
    value.map_or_else(String::new, |i| {
        format!(" [{}, {}]", pct(Some(i.lower)), pct(Some(i.upper)))
    })
}

const CELL_CHARS: usize = 120;

/// User text as inert Markdown, on one line and cut to 120 characters: every ASCII punctuation
/// character is backslash-escaped, which CommonMark renders as the character itself, so no HTML,
/// emphasis, code span, link, table pipe or math can come from it.
fn cell(text: &str) -> String {
    let flat: String = text
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let cut = flat.chars().count() > CELL_CHARS;
    let mut escaped = String::with_capacity(flat.len() + 8);
    for c in flat.chars().take(CELL_CHARS) {
        if c.is_ascii_punctuation() {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    if cut {
        escaped.push('…');
    }
    escaped
}

/// A gate metric as a code span: the names are ours (validated at submission); anything else
/// a stored report might hold is escaped text.
fn metric(name: &str) -> String {
    if is_known_gate_metric(name) {
        format!("`{name}`")
    } else {
        cell(name)
    }
}

/// A side's answer: its output, or the chosen choice with its text when the choices are known.
fn side_answer(side: &SideResult, choices: Option<&[String]>) -> String {
    if let Some(output) = &side.output {
        return cell(output);
    }
    match side.prediction {
        Some(p) => match choices.and_then(|c| c.get(p)) {
            Some(text) => format!("{p}: {}", cell(text)),
            None => format!("choice {p}"),
        },
        None => "n/a".into(),
    }
}

/// Where a side's numbers came from, in one cell.
fn side_source(side: &SideProvenance) -> String {
    match side {
        SideProvenance::Model { model, adapter } => match adapter {
            Some(adapter) => format!("model {} with adapter {}", cell(model), cell(adapter)),
            None => format!("model {}", cell(model)),
        },
        SideProvenance::Predictions { predictions } => {
            format!("recorded run {}", cell(predictions))
        }
        SideProvenance::Endpoint(served) => {
            let mut text = format!(
                "{} served at {}",
                cell(&served.model),
                cell(&served.endpoint)
            );
            if let Some(server) = &served.server {
                let _ = write!(text, " by {}", cell(server));
            }
            if let Some(parent) = served.listed.as_ref().and_then(|l| l.parent.as_ref()) {
                let _ = write!(text, ", a LoRA module on {}", cell(parent));
            }
            if let Some(fingerprint) = &served.system_fingerprint {
                let _ = write!(text, ", system\\_fingerprint {}", cell(fingerprint));
            }
            if served.unavailable.is_some() {
                text.push_str(" (the server could not be asked when the report was made)");
            }
            text
        }
    }
}

/// What users meet at the deployment's temperature, and what the greedy comparison missed.
fn sampled_section(out: &mut String, sampled: &SampledReport) {
    let top_k = sampled
        .top_k
        .map(|k| format!(", top-k {k}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n### Sampled outputs\n\n{} draws per instance and side at temperature {}, top-p {}{top_k}, \
         on {} instances.\n\n| metric | value | 95% interval |\n|---|---|---|",
        sampled.samples, sampled.temperature, sampled.top_p, sampled.n
    );
    let rows = [
        (
            "expected nfr (one draw of each model)",
            pct(sampled.expected_nfr),
            interval(sampled.intervals.expected_nfr),
        ),
        (
            "expected pfr",
            pct(sampled.expected_pfr),
            interval(sampled.intervals.expected_pfr),
        ),
        (
            "reliably worse / better / no reliable change",
            format!(
                "{} / {} / {}",
                sampled.reliably_worse, sampled.reliably_better, sampled.no_reliable_change
            ),
            " Fisher or Welch per instance, BH q < 0.05".to_owned(),
        ),
        (
            "greedy flips that are reliable changes",
            format!(
                "{} of {}",
                sampled.greedy_flips_reliable, sampled.greedy_flips
            ),
            String::new(),
        ),
        (
            "reliable changes greedy missed",
            sampled.reliable_missed_by_greedy.to_string(),
            String::new(),
        ),
    ];
    for (name, value, range) in rows {
        let _ = writeln!(out, "| {name} | {value} |{range} |");
    }
}

pub fn render(
    job: &Job,
    report: Option<&Report>,
    first_negative_flips: &[InstanceRecord],
    inputs: &HashMap<i64, InstanceInput>,
) -> String {
    let mut out = String::new();
    let title = job.name.as_deref().unwrap_or(&job.id);
    let _ = writeln!(out, "## Model update compatibility: {}\n", cell(title));
    let Some(report) = report else {
        let _ = writeln!(
            out,
            "**Status: {}** ({} of {} instances done). No instance has been scored yet.",
            job.status.as_str(),
            job.progress_done,
            job.progress_total
        );
        if let Some(error) = &job.error {
            let _ = writeln!(out, "\nError: {}", cell(error));
        }
        return out;
    };
    let verdict = if report.gate.passed {
        "PASSED"
    } else {
        "FAILED"
    };
    let _ = writeln!(
        out,
        "**Gate: {verdict}** ({} check{}){}\n",
        report.gate.checks.len(),
        if report.gate.checks.len() == 1 {
            ""
        } else {
            "s"
        },
        if report.partial {
            format!(
                " — partial report: {} of {} instances, status {}",
                report.n,
                job.progress_total,
                job.status.as_str()
            )
        } else {
            String::new()
        }
    );
    if !report.gate.checks.is_empty() {
        let _ = writeln!(out, "| check | bound | value | result |\n|---|---|---|---|");
        for check in &report.gate.checks {
            let bound = match (check.min, check.max) {
                (Some(min), Some(max)) => format!("{min} ≤ x ≤ {max}"),
                (Some(min), None) => format!("≥ {min}"),
                (None, Some(max)) => format!("≤ {max}"),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {bound} | {} | {} |",
                metric(&check.metric),
                num(check.value),
                if check.passed { "pass" } else { "**fail**" }
            );
        }
        out.push('\n');
    }
    let m = &report.metrics;
    let c = &report.counts;
    let i = &report.intervals;
    let _ = writeln!(out, "| metric | value | 95% interval |\n|---|---|---|");
    let rows = [
        ("instances", report.n.to_string(), String::new()),
        (
            "accuracy old",
            pct(report.old.accuracy),
            interval(i.acc_old),
        ),
        (
            "accuracy new",
            pct(report.new.accuracy),
            interval(i.acc_new),
        ),
        (
            "Δ accuracy",
            pct(m.delta_accuracy),
            interval(i.delta_accuracy),
        ),
        ("negative flip rate (nfr)", pct(m.nfr), interval(i.nfr)),
        ("positive flip rate (pfr)", pct(m.pfr), interval(i.pfr)),
        ("negative flip impact (nfi)", pct(m.nfi), interval(i.nfi)),
        (
            "backward trust compatibility (btc)",
            pct(m.btc),
            interval(i.btc),
        ),
        (
            "backward error compatibility (bec)",
            pct(m.bec),
            interval(i.bec),
        ),
        ("relative nfr", num(m.nfr_rel), String::new()),
        ("agreement", pct(m.agreement), interval(i.agreement)),
        (
            "flips (negative / positive)",
            format!("{} / {}", c.negative_flips, c.positive_flips),
            format!(" McNemar p = {:.4}", report.mcnemar.p_value),
        ),
        (
            "smallest nfr detectable (80% power)",
            pct(report.power.nfr_detectable),
            " McNemar, alpha 0.05".to_owned(),
        ),
    ];
    for (name, value, range) in rows {
        let _ = writeln!(out, "| {name} | {value} |{range} |");
    }
    if let Some(noise) = &report.noise_floor {
        let _ = writeln!(
            out,
            "| noise floor (old vs old) | {} | nfr above noise: {} |",
            pct(Some(noise.self_flip_rate)),
            noise
                .nfr_exceeds_noise
                .map_or("n/a", |e| if e { "yes" } else { "no" })
        );
    }
    if !report.slices.is_empty() {
        let _ = writeln!(
            out,
            "\n### Worst slices by nfr\n\n| slice | n | nfr | accuracy old → new | vs the rest |\n|---|---|---|---|---|"
        );
        for slice in report.slices.iter().take(WORST_SLICES) {
            let acc = |correct: u64| (slice.n > 0).then(|| correct as f64 / slice.n as f64);
            let versus = match slice.q_value {
                Some(q) if slice.regressed => format!("**regressed** (q = {q:.3})"),
                Some(q) => format!("within chance (q = {q:.2})"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {} → {} | {versus} |",
                cell(&slice.slice),
                if slice.small { " (small)" } else { "" },
                slice.n,
                pct(slice.metrics.nfr),
                pct(acc(slice.counts.both_correct + slice.counts.negative_flips)),
                pct(acc(slice.counts.both_correct + slice.counts.positive_flips)),
            );
        }
        let regressed = report.slices.iter().filter(|s| s.regressed).count();
        let _ = writeln!(
            out,
            "\n{regressed} slice(s) regressed: negative flips above the rest's beyond chance \
             (Fisher's exact test, Benjamini-Hochberg q < 0.05 across the slices); the others' \
             rank may be noise."
        );
    }
    if let Some(sampled) = &report.sampled {
        sampled_section(&mut out, sampled);
    }
    if !first_negative_flips.is_empty() {
        let _ = writeln!(
            out,
            "\n### First negative flips\n\n| id | prompt | old (right) | new (wrong) |\n|---|---|---|---|"
        );
        for record in first_negative_flips {
            let input = inputs.get(&record.idx);
            let prompt = input.map(|i| cell(&i.prompt)).unwrap_or_default();
            let choices = input.and_then(|i| i.choices.as_deref());
            let _ = writeln!(
                out,
                "| {} | {prompt} | {} | {} |",
                cell(&record.id),
                side_answer(&record.old, choices),
                side_answer(&record.new, choices)
            );
        }
    }
    if let Some(provenance) = &report.provenance {
        let _ = writeln!(out, "\n### Sides\n\n| side | what ran |\n|---|---|");
        for (name, side) in [("old", &provenance.old), ("new", &provenance.new)] {
            let _ = writeln!(out, "| {name} | {} |", side_source(side));
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "\n### Warnings\n");
        for warning in &report.warnings {
            let _ = writeln!(out, "- {}", cell(warning));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{JobKind, JobStatus};
    use crate::metrics::{
        Answer, Flip, GateCheck, InstanceOutcome, ReportOptions, SideOutcome, TaskKind,
        compute_report,
    };

    /// Report options with one gate check, nfr at most 0.1.
    fn nfr_gate() -> ReportOptions {
        ReportOptions {
            gate: vec![GateCheck {
                metric: "nfr".into(),
                min: None,
                max: Some(0.1),
            }],
            ..ReportOptions::default()
        }
    }

    fn job() -> Job {
        Job {
            id: "j1".into(),
            kind: JobKind::Evaluation,
            name: Some("llama1 -> llama2 | piqa".into()),
            status: JobStatus::Succeeded,
            spec: crate::store::Document::of(&serde_json::json!({})),
            progress_done: 4,
            progress_total: 4,
            error: None,
            report: None,
            summary: None,
            result: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    /// A side that chose `choice` (its score unread by the page).
    fn chose(choice: usize) -> SideResult {
        SideResult {
            prediction: Some(choice),
            correct: None,
            scores: None,
            output: None,
            answer: None,
            score: 0.0,
            ..Default::default()
        }
    }

    /// A side that generated `output`.
    fn said(output: &str) -> SideResult {
        SideResult {
            prediction: None,
            output: Some(output.into()),
            ..chose(0)
        }
    }

    fn outcome(id: &str, gold: usize, old: usize, new: usize) -> InstanceOutcome {
        let side = |p: usize| SideOutcome {
            score: if p == gold { 1.0 } else { 0.0 },
            answer: Answer::Choice(p),
            samples: Vec::new(),
        };
        InstanceOutcome {
            id: id.into(),
            gold: Some(gold),
            tags: BTreeMap::new(),
            old: side(old),
            new: side(new),
        }
    }

    #[test]
    fn a_failed_gate_comes_first_with_its_checks_slices_and_flips() {
        let outcomes = [
            outcome("a", 0, 0, 1),
            outcome("b", 0, 0, 0),
            outcome("c", 1, 0, 1),
            outcome("d", 1, 1, 0),
        ];
        let options = nfr_gate();
        let report = compute_report(TaskKind::MultipleChoice, &outcomes, &options);
        let flip = InstanceRecord {
            idx: 0,
            id: "a".into(),
            flip: Flip::Negative,
            gold: Some(0),
            tags: Default::default(),
            old: chose(0),
            new: chose(1),
            slices: vec![],
            sampled: None,
        };
        let long = format!("Is the sky | blue?\n{}", "very ".repeat(40));
        let inputs = HashMap::from([(
            0,
            InstanceInput {
                prompt: long,
                choices: Some(vec!["yes".into(), "no".into()]),
                targets: None,
            },
        )]);
        let text = render(&job(), Some(&report), std::slice::from_ref(&flip), &inputs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "## Model update compatibility: llama1 \\-\\> llama2 \\| piqa"
        );
        assert_eq!(lines[2], "**Gate: FAILED** (1 check)");
        assert!(
            text.contains("| `nfr` | ≤ 0.1 | 0.5000 | **fail** |"),
            "{text}"
        );
        assert!(
            text.contains("| negative flip rate (nfr) | 50.00% |"),
            "{text}"
        );
        assert!(
            text.contains("| flips (negative / positive) | 2 / 1 |"),
            "{text}"
        );
        assert!(text.contains("### Worst slices by nfr"));
        // The prompt flattened, escaped and cut; the answers with their texts.
        let row = text.lines().find(|l| l.starts_with("| a |")).unwrap();
        assert!(
            row.starts_with("| a | Is the sky \\| blue\\? very very"),
            "{row}"
        );
        assert!(row.ends_with("… | 0: yes | 1: no |"), "{row}");
        // Without the dataset's rows, the indices alone.
        let text = render(&job(), Some(&report), &[flip], &HashMap::new());
        assert!(text.contains("| a |  | choice 0 | choice 1 |"), "{text}");
        assert!(text.find("Gate").unwrap() < text.find("Worst slices").unwrap());
    }

    #[test]
    fn sampled_outputs_get_their_own_table() {
        let side = |score: f64, samples: &[f64]| SideOutcome {
            score,
            answer: Answer::Text("x".into()),
            samples: samples.to_vec(),
        };
        let instance = |id: &str, old: SideOutcome, new: SideOutcome| InstanceOutcome {
            id: id.into(),
            gold: None,
            tags: BTreeMap::new(),
            old,
            new,
        };
        let (right, wrong) = ([1.0; 8], [0.0; 8]);
        let outcomes = [
            instance("a", side(1.0, &right), side(0.0, &wrong)),
            instance("b", side(1.0, &right), side(1.0, &right)),
        ];
        let options = ReportOptions {
            sampling: Some(crate::metrics::SamplingSettings {
                samples: 8,
                temperature: 0.7,
                top_p: 0.9,
                top_k: Some(40),
            }),
            ..ReportOptions::default()
        };
        let report = compute_report(TaskKind::Generation { tolerance: 0.0 }, &outcomes, &options);
        let text = render(&job(), Some(&report), &[], &HashMap::new());
        assert!(
            text.contains("8 draws per instance and side at temperature 0.7, top-p 0.9, top-k 40, on 2 instances."),
            "{text}"
        );
        assert!(
            text.contains("| expected nfr (one draw of each model) | 50.00% |"),
            "{text}"
        );
        assert!(
            text.contains("| reliably worse / better / no reliable change | 1 / 0 / 1 |"),
            "{text}"
        );
        assert!(
            text.contains("| greedy flips that are reliable changes | 1 of 1 |"),
            "{text}"
        );
        let plain = compute_report(
            TaskKind::Generation { tolerance: 0.0 },
            &outcomes,
            &ReportOptions::default(),
        );
        assert!(!render(&job(), Some(&plain), &[], &HashMap::new()).contains("Sampled"));
    }

    #[test]
    fn a_job_with_nothing_scored_says_so() {
        let mut job = job();
        job.status = JobStatus::Failed;
        job.error = Some("old.model: no model folder".into());
        let text = render(&job, None, &[], &HashMap::new());
        assert!(
            text.contains("**Status: failed** (4 of 4 instances done)"),
            "{text}"
        );
        assert!(text.contains("Error: old\\.model\\: no model folder"));
    }

    /// What a CommonMark + GFM renderer (pulldown-cmark, with the extensions code hosts add)
    /// makes of a report: the text of each heading, table cell and list item, the strong and
    /// code spans, and every other element by name.
    #[derive(Debug, Default)]
    struct Rendered {
        headings: Vec<String>,
        rows: Vec<Vec<String>>,
        items: Vec<String>,
        paragraphs: Vec<String>,
        strong: Vec<String>,
        code: Vec<String>,
        other: Vec<String>,
    }

    fn rendered(markdown: &str) -> Rendered {
        use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
        let options = Options::ENABLE_TABLES
            | Options::ENABLE_FOOTNOTES
            | Options::ENABLE_STRIKETHROUGH
            | Options::ENABLE_TASKLISTS
            | Options::ENABLE_MATH
            | Options::ENABLE_GFM
            | Options::ENABLE_SUPERSCRIPT
            | Options::ENABLE_SUBSCRIPT
            | Options::ENABLE_WIKILINKS
            | Options::ENABLE_DEFINITION_LIST
            | Options::ENABLE_HEADING_ATTRIBUTES;
        let mut out = Rendered::default();
        let (mut text, mut strong) = (String::new(), None::<String>);
        for event in Parser::new_ext(markdown, options) {
            match event {
                Event::Text(t) => {
                    text.push_str(&t);
                    if let Some(s) = strong.as_mut() {
                        s.push_str(&t);
                    }
                }
                Event::Code(c) => {
                    text.push_str(&c);
                    out.code.push(c.to_string());
                }
                Event::Start(Tag::Strong) => strong = Some(String::new()),
                Event::End(TagEnd::Strong) => out.strong.extend(strong.take()),
                Event::Start(Tag::TableRow | Tag::TableHead) => out.rows.push(Vec::new()),
                Event::End(TagEnd::TableCell) => {
                    out.rows.last_mut().unwrap().push(std::mem::take(&mut text))
                }
                Event::End(TagEnd::Heading(_)) => out.headings.push(std::mem::take(&mut text)),
                Event::End(TagEnd::Item) => out.items.push(std::mem::take(&mut text)),
                Event::End(TagEnd::Paragraph) => out.paragraphs.push(std::mem::take(&mut text)),
                Event::Start(
                    Tag::Paragraph
                    | Tag::Heading { .. }
                    | Tag::Table(_)
                    | Tag::TableCell
                    | Tag::List(None)
                    | Tag::Item,
                )
                | Event::End(_) => {}
                other => out.other.push(format!("{other:?}")),
            }
        }
        out
    }

    // Each at most 120 characters, so that none is cut.
    const NAME: &str =
        "**Gate: PASSED** <img src=https://evil.example/p.png> [ok](https://evil.example) ##";
    const PROMPT: &str = "<script>alert(1)</script> | `code` ![x](https://evil.example/x.png) <https://evil.example> $x$";
    const OUTPUT: &str = "``` **bold** <b>hi</b> H~2~O x^2^ [[wiki]] ~~gone~~ a\\|b trailing\\";
    const CHOICE: &str = "*em* _em_ <a href=x>y</a> &lt;b&gt; [^1] www.evil.example";
    const ID: &str = "<u>id</u>";
    const TAG: &str = "<img src=x onerror=alert(1)>";
    const WARNING: &str = "# heading\n> quote\n- [ ] task\n---\n**Gate: PASSED**";

    #[test]
    fn hostile_user_text_renders_as_its_own_text_and_nothing_else() {
        let tagged = |id: &str, gold, old, new| {
            let mut o = outcome(id, gold, old, new);
            o.tags.insert("topic".into(), TAG.into());
            o
        };
        let outcomes = [tagged("a", 0, 0, 1), tagged("b", 0, 0, 0)];
        let options = nfr_gate();
        let mut report = compute_report(TaskKind::MultipleChoice, &outcomes, &options);
        report.warnings.push(WARNING.into());
        report.warnings.push("1. numbered".into());
        let mut job = job();
        job.name = Some(NAME.into());
        let record = |idx: i64, id: &str, old: SideResult, new: SideResult| InstanceRecord {
            idx,
            id: id.into(),
            flip: Flip::Negative,
            gold: Some(0),
            tags: Default::default(),
            old,
            new,
            slices: vec![],
            sampled: None,
        };
        let flips = [
            record(0, ID, chose(0), chose(1)),
            record(1, "g", said("fine"), said(OUTPUT)),
        ];
        let inputs = HashMap::from([(
            0,
            InstanceInput {
                prompt: PROMPT.into(),
                choices: Some(vec!["yes".into(), CHOICE.into()]),
                targets: None,
            },
        )]);
        let text = render(&job, Some(&report), &flips, &inputs);
        let page = rendered(&text);

        assert_eq!(page.other, Vec::<String>::new(), "{text}");
        assert_eq!(page.strong, ["Gate: FAILED", "fail"], "{text}");
        assert_eq!(page.code, ["nfr"], "{text}");
        assert_eq!(
            page.headings,
            [
                format!("Model update compatibility: {NAME}").as_str(),
                "Worst slices by nfr",
                "First negative flips",
                "Warnings"
            ],
            "{text}"
        );
        assert!(page.paragraphs[0].starts_with("Gate: FAILED (1 check)"));
        // Every table row keeps its columns, and the user's text reads as it was written.
        let flip_rows: Vec<&Vec<String>> = page.rows.iter().filter(|r| r.len() == 4).collect();
        let slice_rows: Vec<&Vec<String>> = page.rows.iter().filter(|r| r.len() == 5).collect();
        assert!(page.rows.iter().all(|r| [3, 4, 5].contains(&r.len())));
        assert!(
            flip_rows.contains(&&vec![
                ID.to_string(),
                PROMPT.into(),
                "0: yes".into(),
                format!("1: {CHOICE}")
            ]),
            "{text}"
        );
        assert!(
            flip_rows.contains(&&vec![
                "g".to_string(),
                String::new(),
                "fine".into(),
                OUTPUT.into()
            ]),
            "{text}"
        );
        assert!(
            slice_rows
                .iter()
                .any(|r| r[0] == format!("topic={TAG} (small)")),
            "{text}"
        );
        assert_eq!(
            page.items[page.items.len() - 2..],
            [WARNING.replace('\n', " ").as_str(), "1. numbered"],
            "{text}"
        );
    }

    #[test]
    fn a_hostile_error_renders_inert() {
        let mut job = job();
        job.name = Some(NAME.into());
        job.status = JobStatus::Failed;
        job.error = Some(format!("old.model: {TAG} **Gate: PASSED**"));
        let text = render(&job, None, &[], &HashMap::new());
        let page = rendered(&text);
        assert_eq!(page.other, Vec::<String>::new(), "{text}");
        assert_eq!(page.strong, ["Status: failed"], "{text}");
        assert_eq!(
            page.paragraphs[1],
            format!("Error: old.model: {TAG} **Gate: PASSED**")
        );
    }
}
