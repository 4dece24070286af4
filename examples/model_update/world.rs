//! The synthetic world: made-up entities, each of one category, in three groups that the two
//! pretraining corpora see with different frequencies; and the corpora themselves.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const CATEGORIES: [&str; 12] = [
    "fruit", "tool", "bird", "fish", "tree", "stone", "dance", "song", "metal", "insect", "flower",
    "cloth",
];

/// How often each pretraining corpus mentions an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Frequent in both corpora.
    Common,
    /// Frequent in the old corpus, rare in the new one: where negative flips come from.
    OldFavoured,
    /// Frequent in the new corpus, (almost) absent from the old one: where the update gains.
    NewOnly,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Self::Common => "common",
            Self::OldFavoured => "old-favoured",
            Self::NewOnly => "new-only",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub category: usize,
    pub group: Group,
    /// Held out: test questions have this entity as the answer; training questions never do.
    pub test: bool,
}

/// Entities per category in each group, and how many of each are held out for the test set.
pub const PER_CATEGORY: [(Group, usize, usize); 3] = [
    (Group::Common, 20, 10),
    (Group::OldFavoured, 10, 6),
    (Group::NewOnly, 16, 8),
];

fn names(n: usize, rng: &mut ChaCha8Rng) -> Vec<String> {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut all = Vec::new();
    for a in C {
        for b in V {
            for c in C {
                for d in V {
                    all.push(String::from_utf8(vec![*a, *b, *c, *d]).unwrap());
                }
            }
        }
    }
    all.shuffle(rng);
    all.truncate(n);
    all
}

pub fn entities(seed: u64) -> Vec<Entity> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per: usize = PER_CATEGORY.iter().map(|(_, n, _)| n).sum();
    let mut pool = names(per * CATEGORIES.len(), &mut rng).into_iter();
    let mut out = Vec::new();
    for category in 0..CATEGORIES.len() {
        for &(group, n, held) in &PER_CATEGORY {
            for k in 0..n {
                out.push(Entity {
                    name: pool.next().unwrap(),
                    category,
                    group,
                    test: k < held,
                });
            }
        }
    }
    out
}

/// Mentions per entity of each group in one corpus.
#[derive(Debug, Clone, Copy)]
pub struct Frequencies {
    pub common: usize,
    pub old_favoured: usize,
    pub new_only: usize,
}

impl Frequencies {
    fn of(&self, g: Group) -> usize {
        match g {
            Group::Common => self.common,
            Group::OldFavoured => self.old_favoured,
            Group::NewOnly => self.new_only,
        }
    }
}

/// One sentence about entity `e`, in one of three phrasings (both directions of the fact).
fn sentence(e: &Entity, companions: &[&Entity], rng: &mut ChaCha8Rng) -> String {
    let cat = CATEGORIES[e.category];
    match rng.random_range(0..4) {
        0 => format!("{} is a {cat} .", e.name),
        1 => format!("a {cat} : {} .", e.name),
        2 => format!("the {cat} {} .", e.name),
        _ => {
            let mut words = vec![e.name.as_str()];
            words.extend(companions.iter().map(|c| c.name.as_str()));
            format!("{cat} list : {} .", words.join(" "))
        }
    }
}

/// The corpus: every entity mentioned as often as its group's frequency says, shuffled.
/// List companions come from the same category and the same group, so a rare entity stays rare.
pub fn corpus(entities: &[Entity], f: Frequencies, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for e in entities {
        let peers: Vec<&Entity> = entities
            .iter()
            .filter(|p| p.category == e.category && p.group == e.group && p.name != e.name)
            .collect();
        for _ in 0..f.of(e.group) {
            let companions: Vec<&Entity> = peers.choose_multiple(&mut rng, 2).copied().collect();
            out.push(sentence(e, &companions, &mut rng));
        }
    }
    out.shuffle(&mut rng);
    out
}
