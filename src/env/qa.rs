//! Multi-hop question answering over a local encyclopedia, in the style of ReAct's HotpotQA setting
//! (RetroAct's QA tasks): the agent acts with `search[entity]`, `lookup[keyword]` and
//! `finish[answer]`.
//!
//! The encyclopedia is one fixed fictional world (people, towns, rivers, companies and countries
//! with invented names, so no answer can be known without reading), built once from a constant
//! seed. Each task asks a two-hop question: a bridge question (the country or river of the town
//! where someone was born; the birth year of a company's founder) or a comparison (the longer of
//! two rivers, the larger of two towns). `search[E]` opens E's page and shows its first two
//! sentences (or "Could not find", with similar titles); `lookup[k]` shows the next sentence of the
//! open page that contains k, cycling; `finish[A]` ends the episode with reward 1 if A matches the
//! answer exactly after normalisation (lower case, no articles or punctuation; `"qa"`), or with
//! the token F1 between the two (`"qa-f1"`). Invariants: the question and its answer come from
//! `task_id` alone; the order of a page's sentences after its first comes from `(task_id, seed)`,
//! so the fact a question needs may be in the preview or only reachable with `lookup`. The expert
//! acts on what it has seen: it searches the first entity, looks the fact up if the preview did
//! not show it, follows the bridge, and answers once the last fact has been shown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use super::{mix64, with_article, Env, Reset, Step};

/// Registry name: exact-match reward.
pub const NAME: &str = "qa";
/// Registry name: token-F1 reward.
pub const F1_NAME: &str = "qa-f1";

/// Step budget of an episode (ReAct's HotpotQA agents get 7 to 8).
pub const DEFAULT_MAX_STEPS: usize = 10;

/// SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (mix64(self.0) % n as u64) as usize
    }
}

const SYLLABLES: [&str; 24] = [
    "ar", "vel", "don", "mir", "ka", "tes", "lo", "ran", "bel", "ost", "qui", "nar", "sel", "dor", "vin", "ta", "mo",
    "rek", "is", "ul", "fen", "gar", "li", "zan",
];
const OCCUPATIONS: [&str; 6] = ["painter", "engineer", "poet", "chemist", "sailor", "architect"];
const PRODUCTS: [&str; 5] = ["bicycles", "lamps", "clocks", "boats", "pianos"];

/// One page of the encyclopedia.
#[derive(Debug, Clone)]
struct Page {
    title: String,
    /// The lead sentence, then the others (whose order the seed shuffles).
    sentences: Vec<String>,
}

struct Person {
    name: String,
    town: usize,
    year: u32,
}
struct Town {
    name: String,
    country: usize,
    river: usize,
    people: u32,
}
struct River {
    name: String,
    km: u32,
}
struct Company {
    name: String,
    founder: usize,
}

/// The fixed world.
struct World {
    countries: Vec<String>,
    people: Vec<Person>,
    towns: Vec<Town>,
    rivers: Vec<River>,
    companies: Vec<Company>,
    pages: BTreeMap<String, Page>,
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

impl World {
    fn get() -> &'static World {
        static WORLD: OnceLock<World> = OnceLock::new();
        WORLD.get_or_init(World::build)
    }

    fn build() -> World {
        let mut rng = Rng(0x00E1_C7C1_0BED_1A00);
        let mut used = BTreeSet::new();
        let mut name = |rng: &mut Rng, parts: usize| loop {
            let n: String = (0..parts).map(|_| SYLLABLES[rng.below(SYLLABLES.len())]).collect();
            let n = capitalised(&n);
            if n.len() > 3 && used.insert(n.clone()) {
                return n;
            }
        };
        let countries: Vec<String> = (0..12).map(|_| name(&mut rng, 3)).collect();
        let rivers: Vec<River> =
            (0..40).map(|_| River { name: name(&mut rng, 2), km: 80 + rng.below(2900) as u32 }).collect();
        let towns: Vec<Town> = (0..120)
            .map(|_| Town {
                name: name(&mut rng, 3),
                country: rng.below(countries.len()),
                river: rng.below(rivers.len()),
                people: 1_000 + rng.below(900_000) as u32,
            })
            .collect();
        let people: Vec<Person> = (0..300)
            .map(|_| Person {
                name: format!("{} {}", name(&mut rng, 2), name(&mut rng, 3)),
                town: rng.below(towns.len()),
                year: 1700 + rng.below(300) as u32,
            })
            .collect();
        let companies: Vec<Company> = (0..100)
            .map(|_| Company { name: format!("{} Works", name(&mut rng, 2)), founder: rng.below(people.len()) })
            .collect();
        let mut pages = BTreeMap::new();
        let mut add = |title: &str, sentences: Vec<String>| {
            pages.insert(title.to_lowercase(), Page { title: title.into(), sentences });
        };
        for p in &people {
            let job = OCCUPATIONS[rng.below(OCCUPATIONS.len())];
            add(
                &p.name,
                vec![
                    format!("{} is {}.", p.name, with_article(job)),
                    format!("{} was born in {} in {}.", p.name, towns[p.town].name, p.year),
                    format!(
                        "As {}, {} worked for many years in {}.",
                        with_article(job),
                        p.name,
                        countries[rng.below(countries.len())]
                    ),
                    format!("{} is remembered for a long correspondence with friends.", p.name),
                ],
            );
        }
        for t in &towns {
            add(
                &t.name,
                vec![
                    format!("{} is a town in {}.", t.name, countries[t.country]),
                    format!("{} lies on the {} river.", t.name, rivers[t.river].name),
                    format!("{} has {} inhabitants.", t.name, t.people),
                    format!("{} holds a market every week.", t.name),
                ],
            );
        }
        for r in &rivers {
            add(
                &r.name,
                vec![
                    format!("The {} is a river.", r.name),
                    format!("The {} is {} kilometres long.", r.name, r.km),
                    format!("The {} freezes in cold winters.", r.name),
                ],
            );
        }
        for c in &companies {
            let made = PRODUCTS[rng.below(PRODUCTS.len())];
            add(
                &c.name,
                vec![
                    format!("{} is a company that makes {made}.", c.name),
                    format!("{} was founded by {}.", c.name, people[c.founder].name),
                    format!("{} employs many people.", c.name),
                ],
            );
        }
        for c in &countries {
            add(c, vec![format!("{c} is a country."), format!("{c} has a long coast.")]);
        }
        World { countries, people, towns, rivers, companies, pages }
    }
}

/// One hop of a question: the page to open and the sentence on it that holds the next fact.
#[derive(Debug, Clone)]
struct Hop {
    page: String,
    fact: String,
    keyword: String,
}

/// A question with the hops the expert follows and the answer.
#[derive(Debug, Clone)]
struct Question {
    text: String,
    hops: Vec<Hop>,
    answer: String,
}

fn question(task_id: u64) -> Question {
    let w = World::get();
    let mut rng = Rng(mix64(task_id ^ 0x0A0A_5EED));
    let hop = |page: &str, fact: String, keyword: &str| Hop { page: page.into(), fact, keyword: keyword.into() };
    match rng.below(5) {
        0 | 1 => {
            let p = &w.people[rng.below(w.people.len())];
            let t = &w.towns[p.town];
            let born = format!("{} was born in {} in {}.", p.name, t.name, p.year);
            if rng.below(2) == 0 {
                let country = &w.countries[t.country];
                Question {
                    text: format!("In which country is the town where {} was born?", p.name),
                    hops: vec![
                        hop(&p.name, born, "born"),
                        hop(&t.name, format!("{} is a town in {country}.", t.name), "town"),
                    ],
                    answer: country.clone(),
                }
            } else {
                let river = &w.rivers[t.river].name;
                Question {
                    text: format!("On which river lies the town where {} was born?", p.name),
                    hops: vec![
                        hop(&p.name, born, "born"),
                        hop(&t.name, format!("{} lies on the {river} river.", t.name), "river"),
                    ],
                    answer: river.clone(),
                }
            }
        }
        2 => {
            let c = &w.companies[rng.below(w.companies.len())];
            let f = &w.people[c.founder];
            let t = &w.towns[f.town];
            Question {
                text: format!("In what year was the founder of {} born?", c.name),
                hops: vec![
                    hop(&c.name, format!("{} was founded by {}.", c.name, f.name), "founded"),
                    hop(&f.name, format!("{} was born in {} in {}.", f.name, t.name, f.year), "born"),
                ],
                answer: f.year.to_string(),
            }
        }
        3 => {
            let a = rng.below(w.rivers.len());
            let b = (a + 1 + rng.below(w.rivers.len() - 1)) % w.rivers.len();
            let (ra, rb) = (&w.rivers[a], &w.rivers[b]);
            let long = |r: &River| format!("The {} is {} kilometres long.", r.name, r.km);
            Question {
                text: format!("Which river is longer, the {} or the {}?", ra.name, rb.name),
                hops: vec![hop(&ra.name, long(ra), "kilometres"), hop(&rb.name, long(rb), "kilometres")],
                answer: if ra.km >= rb.km { ra.name.clone() } else { rb.name.clone() },
            }
        }
        _ => {
            let a = rng.below(w.towns.len());
            let b = (a + 1 + rng.below(w.towns.len() - 1)) % w.towns.len();
            let (ta, tb) = (&w.towns[a], &w.towns[b]);
            let size = |t: &Town| format!("{} has {} inhabitants.", t.name, t.people);
            Question {
                text: format!("Which town has more inhabitants, {} or {}?", ta.name, tb.name),
                hops: vec![hop(&ta.name, size(ta), "inhabitants"), hop(&tb.name, size(tb), "inhabitants")],
                answer: if ta.people >= tb.people { ta.name.clone() } else { tb.name.clone() },
            }
        }
    }
}

/// Lower case, punctuation and articles removed, whitespace collapsed (HotpotQA's normalisation).
pub fn normalize(s: &str) -> String {
    let lower: String = s.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Token F1 between two answers after [`normalize`] (HotpotQA's F1).
pub fn f1(prediction: &str, gold: &str) -> f32 {
    let (p, g) = (normalize(prediction), normalize(gold));
    let (p, g): (Vec<&str>, Vec<&str>) = (p.split_whitespace().collect(), g.split_whitespace().collect());
    let mut left: Vec<&str> = g.clone();
    let common = p
        .iter()
        .filter(|w| match left.iter().position(|x| x == *w) {
            Some(i) => {
                left.swap_remove(i);
                true
            }
            None => false,
        })
        .count();
    if common == 0 {
        return 0.0;
    }
    let (precision, recall) = (common as f32 / p.len() as f32, common as f32 / g.len() as f32);
    2.0 * precision * recall / (precision + recall)
}

/// The QA environment.
pub struct Qa {
    name: &'static str,
    question: Option<Question>,
    /// The seed's permutation key for page sentences.
    order_key: u64,
    /// The open page and the lookup cursor (keyword, next index).
    page: Option<Page>,
    cursor: Option<(String, usize)>,
    /// Every sentence shown so far.
    seen: BTreeSet<String>,
    /// Entity titles shown so far (in the question or in observations), for the admissible set.
    mentioned: BTreeSet<String>,
    steps: usize,
    done: bool,
    success: bool,
}

impl Qa {
    /// Exact-match reward (`"qa"`).
    pub fn exact_match() -> Self {
        Self::named(NAME)
    }

    /// Token-F1 reward (`"qa-f1"`).
    pub fn token_f1() -> Self {
        Self::named(F1_NAME)
    }

    fn named(name: &'static str) -> Self {
        Qa {
            name,
            question: None,
            order_key: 0,
            page: None,
            cursor: None,
            seen: BTreeSet::new(),
            mentioned: BTreeSet::new(),
            steps: 0,
            done: true,
            success: false,
        }
    }

    /// `title`'s page with its sentences after the lead in this episode's order.
    fn open(&self, title: &str) -> Option<Page> {
        let mut page = World::get().pages.get(&title.to_lowercase())?.clone();
        let title_hash =
            page.title.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3));
        let mut rng = Rng(mix64(self.order_key ^ title_hash));
        let rest = &mut page.sentences[1..];
        for i in (1..rest.len()).rev() {
            rest.swap(i, rng.below(i + 1));
        }
        Some(page)
    }

    /// Shows `text`: records its sentences and the entity titles it names.
    fn show(&mut self, text: &str) {
        for s in text.split_inclusive(". ").map(str::trim) {
            self.seen.insert(s.to_string());
        }
        self.mention(text);
    }

    fn mention(&mut self, text: &str) {
        let lower = text.to_lowercase();
        for page in World::get().pages.values() {
            if lower.contains(&page.title.to_lowercase()) {
                self.mentioned.insert(page.title.clone());
            }
        }
    }

    fn search(&mut self, query: &str) -> String {
        match self.open(query) {
            Some(page) => {
                let preview = page.sentences[..2.min(page.sentences.len())].join(" ");
                self.page = Some(page);
                self.cursor = None;
                self.show(&preview);
                preview
            }
            None => {
                let first = query.chars().next().map(|c| c.to_ascii_lowercase());
                let similar: Vec<&str> = World::get()
                    .pages
                    .values()
                    .filter(|p| p.title.chars().next().map(|c| c.to_ascii_lowercase()) == first)
                    .map(|p| p.title.as_str())
                    .take(3)
                    .collect();
                format!("Could not find [{query}]. Similar: [{}].", similar.join(", "))
            }
        }
    }

    fn lookup(&mut self, keyword: &str) -> String {
        let Some(page) = &self.page else { return "No page is open: search first.".into() };
        let key = keyword.to_lowercase();
        let hits: Vec<String> = page.sentences.iter().filter(|s| s.to_lowercase().contains(&key)).cloned().collect();
        if hits.is_empty() {
            return "No more results.".into();
        }
        let i = match &self.cursor {
            Some((k, i)) if *k == key => (i + 1) % hits.len(),
            _ => 0,
        };
        self.cursor = Some((key, i));
        let text = format!("(Result {} / {}) {}", i + 1, hits.len(), hits[i]);
        self.show(&hits[i]);
        text
    }
}

/// The argument of `verb[...]` in `action`.
fn argument<'a>(action: &'a str, verb: &str) -> Option<&'a str> {
    action.strip_prefix(verb)?.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

impl Env for Qa {
    fn name(&self) -> &str {
        self.name
    }

    fn reset(&mut self, task_id: u64, seed: u64) -> Reset {
        let q = question(task_id);
        self.order_key = mix64(task_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed);
        self.page = None;
        self.cursor = None;
        self.seen.clear();
        self.mentioned.clear();
        self.mention(&q.text);
        self.steps = 0;
        self.done = false;
        self.success = false;
        let task = format!("Your task is to: answer the question. Question: {}", q.text);
        self.question = Some(q);
        Reset {
            observation: "You can search a local encyclopedia with search[entity], look up a keyword on the open \
                          page with lookup[keyword], and answer with finish[answer]."
                .into(),
            task,
        }
    }

    fn step(&mut self, action: &str) -> Step {
        if self.done {
            return Step { observation: "Nothing happens.".into(), reward: 0.0, done: true, success: self.success };
        }
        self.steps += 1;
        let action = action.trim();
        let (mut observation, mut reward) = (String::new(), 0.0);
        if let Some(q) = argument(action, "search") {
            observation = self.search(q);
        } else if let Some(k) = argument(action, "lookup") {
            observation = self.lookup(k);
        } else if let Some(a) = argument(action, "finish") {
            let gold = &self.question.as_ref().expect("reset first").answer;
            let exact = normalize(a) == normalize(gold);
            reward = match self.name {
                F1_NAME => f1(a, gold),
                _ => f32::from(u8::from(exact)),
            };
            self.success = exact;
            self.done = true;
            observation = if exact { "Your answer is correct.".into() } else { "Your answer is wrong.".into() };
        } else {
            observation.push_str("Invalid action: use search[entity], lookup[keyword] or finish[answer].");
        }
        if self.steps >= DEFAULT_MAX_STEPS {
            self.done = true;
        }
        Step { observation, reward, done: self.done, success: self.success }
    }

    /// `search[...]` for every entity named so far, `lookup[...]` with the question's keywords on
    /// the open page, `finish[...]` for every entity named and every number shown.
    fn admissible_actions(&self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        let mut out: Vec<String> = self.mentioned.iter().map(|t| format!("search[{t}]")).collect();
        if self.page.is_some() {
            out.extend(
                ["born", "founded", "river", "town", "kilometres", "inhabitants"].map(|k| format!("lookup[{k}]")),
            );
        }
        let mut answers: BTreeSet<String> = self.mentioned.clone();
        for s in &self.seen {
            answers.extend(s.split(|c: char| !c.is_ascii_digit()).filter(|n| n.len() >= 3).map(String::from));
        }
        out.extend(answers.iter().map(|a| format!("finish[{a}]")));
        out
    }

    fn expert_action(&self) -> Option<String> {
        if self.done {
            return None;
        }
        let q = self.question.as_ref()?;
        for hop in &q.hops {
            if self.seen.contains(&hop.fact) {
                continue;
            }
            let open = self.page.as_ref().is_some_and(|p| p.title == hop.page);
            return Some(if open { format!("lookup[{}]", hop.keyword) } else { format!("search[{}]", hop.page) });
        }
        Some(format!("finish[{}]", q.answer))
    }

    fn max_steps(&self) -> usize {
        DEFAULT_MAX_STEPS
    }
}

#[cfg(test)]
mod tests;
