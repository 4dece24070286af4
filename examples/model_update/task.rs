//! The multiple-choice task: "which one is a <category>?" with four entity names as choices.
//! Training questions have training entities as answers; test questions have held-out ones, so
//! the labels never teach the test facts: only the base models know them. Distractors come from
//! other categories of the answer's own group, so a question is as hard as its entities are
//! unfamiliar: a model that never learned a group's facts is at chance on it.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::world::{CATEGORIES, Entity};

pub const TEMPLATES: [&str; 3] = [
    "q: which one is a {} ? a:",
    "q: name a {} . a:",
    "q: pick the {} from these . a:",
];

/// `per_entity` questions for every entity with `test == held_out`.
pub fn items(entities: &[Entity], held_out: bool, per_entity: usize, seed: u64) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, e) in entities.iter().enumerate() {
        if e.test != held_out {
            continue;
        }
        let others: Vec<&Entity> = entities
            .iter()
            .filter(|o| o.category != e.category && o.group == e.group)
            .collect();
        for k in 0..per_entity {
            let mut choices: Vec<&str> = others
                .choose_multiple(&mut rng, 3)
                .map(|o| o.name.as_str())
                .collect();
            let answer = rng.random_range(0..=3);
            choices.insert(answer, &e.name);
            let template = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
            let split = if held_out { "test" } else { "train" };
            out.push(json!({
                "id": format!("{split}-{i}-{k}"),
                "prompt": template.replace("{}", CATEGORIES[e.category]),
                "choices": choices,
                "answer": answer,
                "tags": {"group": e.group.name(), "category": CATEGORIES[e.category]},
            }));
        }
    }
    out.shuffle(&mut rng);
    out
}
