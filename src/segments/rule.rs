//! Segment rules: CEL expressions over `profile` and `now`.
//!
//! `cel` has no type checker, so a rule is checked here, once, when it is
//! defined: the syntax tree is walked against an allowlist of functions and
//! the profile schema, and every mistake is reported with its line and
//! column. The walk also records which parts of a profile the rule reads, so
//! that evaluation builds only those, and rewrites `events_in(name, window)`
//! into a lookup of a count computed before evaluation.

use std::collections::BTreeSet;
use std::fmt;

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, SelectExpr, SourceInfo};
use cel::{Context, Program, Value};

use crate::computed::WINDOW_DAYS_MAX;

/// The variable under which `events_in` counts are handed to a rule; not a
/// name a rule can write, so it cannot clash with one.
pub const EVENT_COUNTS_VARIABLE: &str = "@event_counts";

const PROFILE: &str = "profile";
const NOW: &str = "now";
const EVENTS_IN: &str = "events_in";
const GEO_DISTANCE_KM: &str = "geo_distance_km";
const DAY_MS: i64 = 86_400_000;

/// Fields of `profile`.
const PROFILE_FIELDS: [&str; 5] = ["id", "traits", "computed", "consent", "identifiers"];

/// What kind of value a computed trait holds, for checking comparisons with
/// literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Number,
    Text,
    Time,
    List,
    Map,
}

/// Every computed trait a rule can read, with its type. Absent values (no
/// order yet, no quintiles yet) are `null`.
const COMPUTED_FIELDS: [(&str, FieldType); 21] = [
    ("recency_days", FieldType::Number),
    ("frequency", FieldType::Number),
    ("monetary", FieldType::Number),
    ("lifetime_value", FieldType::Number),
    ("average_order_value", FieldType::Number),
    ("first_order_at", FieldType::Time),
    ("last_order_at", FieldType::Time),
    ("last_seen_at", FieldType::Time),
    ("email_opens_30d", FieldType::Number),
    ("email_opens_90d", FieldType::Number),
    ("email_clicks_30d", FieldType::Number),
    ("email_clicks_90d", FieldType::Number),
    ("conversions_30d", FieldType::Number),
    ("conversions_90d", FieldType::Number),
    ("engagement_group", FieldType::Text),
    ("lifecycle_stage", FieldType::Text),
    ("interests", FieldType::List),
    ("interest_scores", FieldType::Map),
    ("r_score", FieldType::Number),
    ("f_score", FieldType::Number),
    ("m_score", FieldType::Number),
];

/// `profile.computed.custom.<name>`: user-defined computed traits.
pub const CUSTOM: &str = "custom";

/// Functions and operators a rule may call: CEL's standard library as
/// `cel` implements it, and Sightline's own.
const FUNCTIONS: [&str; 51] = [
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "-_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "timestamp",
    "duration",
    "dyn",
    "type",
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "exists",
    "all",
    "exists_one",
    "filter",
    "map",
    GEO_DISTANCE_KM,
    EVENTS_IN,
];

/// Type names, usable as values (`type(x) == int`).
const TYPE_NAMES: [&str; 12] = [
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
];

/// A mistake in a rule, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based line and column; `None` when the parser gave no position.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "line {line}, column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RuleError {}

/// Which names (of traits, of computed traits) a rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NameNeeds {
    #[default]
    None,
    Named(BTreeSet<String>),
    All,
}

impl NameNeeds {
    fn add(&mut self, name: &str) {
        match self {
            NameNeeds::All => {}
            NameNeeds::Named(names) => {
                names.insert(name.to_owned());
            }
            NameNeeds::None => *self = NameNeeds::Named(BTreeSet::from([name.to_owned()])),
        }
    }

    pub fn union(&mut self, other: &NameNeeds) {
        match other {
            NameNeeds::None => {}
            NameNeeds::All => *self = NameNeeds::All,
            NameNeeds::Named(names) => names.iter().for_each(|name| self.add(name)),
        }
    }

    pub fn wants(&self, name: &str) -> bool {
        match self {
            NameNeeds::None => false,
            NameNeeds::Named(names) => names.contains(name),
            NameNeeds::All => true,
        }
    }
}

/// An event count over a trailing window that a rule reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventWindow {
    pub name: String,
    pub window_ms: i64,
}

impl EventWindow {
    /// The key of this count in [`EVENT_COUNTS_VARIABLE`].
    pub fn key(&self) -> String {
        format!("{}:{}", self.window_ms, self.name)
    }
}

/// The parts of a profile a rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    pub id: bool,
    pub traits: NameNeeds,
    pub computed: NameNeeds,
    pub consent: bool,
    pub identifiers: bool,
    pub event_windows: BTreeSet<EventWindow>,
}

impl Needs {
    fn everything() -> Needs {
        Needs {
            id: true,
            traits: NameNeeds::All,
            computed: NameNeeds::All,
            consent: true,
            identifiers: true,
            event_windows: BTreeSet::new(),
        }
    }

    pub fn union(&mut self, other: &Needs) {
        self.id |= other.id;
        self.traits.union(&other.traits);
        self.computed.union(&other.computed);
        self.consent |= other.consent;
        self.identifiers |= other.identifiers;
        self.event_windows
            .extend(other.event_windows.iter().cloned());
    }
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    expression: IdedExpr,
    needs: Needs,
    reads_clock: bool,
}

impl Rule {
    pub fn compile(source: &str) -> Result<Rule, RuleError> {
        if source.trim().is_empty() {
            return Err(RuleError {
                position: None,
                message: "the rule is empty".to_owned(),
            });
        }
        let checked = check_boolean(source, Vocabulary::Profile)?;
        Ok(Rule {
            expression: checked.expression,
            needs: checked.needs,
            reads_clock: checked.reads_clock,
        })
    }

    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// Whether the outcome can change with time alone: the rule reads
    /// `now`, a windowed event count, or computed traits (recency,
    /// lifecycle stage, windowed counts).
    pub fn depends_on_time(&self) -> bool {
        self.reads_clock
            || self.needs.computed != NameNeeds::None
            || !self.needs.event_windows.is_empty()
    }

    /// Evaluates against a scope holding `profile`, `now` and the event
    /// counts. Only `true` makes a member: an evaluation error (a missing
    /// trait, a type mismatch in data) does not.
    pub fn matches(&self, scope: &Context<'_, '_>) -> bool {
        matches!(
            Value::resolve(&self.expression, scope),
            Ok(Value::Bool(true))
        )
    }
}

/// The variables an expression may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vocabulary {
    /// Segment rules: `profile` and `now`.
    Profile,
    /// Conditions of computed traits: the event's `properties`.
    EventProperties,
}

const PROPERTIES: &str = "properties";

/// A checked condition over one event's `properties`, for computed traits.
#[derive(Debug, Clone)]
pub struct Condition {
    expression: IdedExpr,
}

impl Condition {
    pub fn compile(source: &str) -> Result<Condition, RuleError> {
        let checked = check_boolean(source, Vocabulary::EventProperties)?;
        Ok(Condition {
            expression: checked.expression,
        })
    }

    /// Only `true` counts the event; an error (a missing property) does not.
    pub fn holds(&self, scope: &Context<'_, '_>) -> bool {
        matches!(
            Value::resolve(&self.expression, scope),
            Ok(Value::Bool(true))
        )
    }
}

/// A checked expression and what it reads.
struct Checked {
    expression: IdedExpr,
    needs: Needs,
    reads_clock: bool,
}

/// Parses and checks an expression in a vocabulary; it must be able to be
/// true or false.
fn check_boolean(source: &str, vocabulary: Vocabulary) -> Result<Checked, RuleError> {
    let program = parse(source)?;
    let mut checker = Checker {
        vocabulary,
        source: source.to_owned(),
        source_info: program.source_info(),
        bound: Vec::new(),
        needs: Needs::default(),
        reads_clock: false,
    };
    let mut expression = program.expression().clone();
    checker.check(&mut expression)?;
    if let Some(kind) = plainly_not_boolean(&expression) {
        let what = match vocabulary {
            Vocabulary::Profile => "a rule must be true or false for a profile",
            Vocabulary::EventProperties => "a condition must be true or false for an event",
        };
        return Err(checker.error(expression.id, format!("{what}; this one is a {kind}")));
    }
    Ok(Checked {
        expression,
        needs: checker.needs,
        reads_clock: checker.reads_clock,
    })
}

fn parse(source: &str) -> Result<Program, RuleError> {
    Program::compile(source).map_err(|errors| {
        let first = errors.errors.into_iter().next();
        RuleError {
            position: first.as_ref().and_then(|error| {
                let (line, column) = error.pos;
                // The parser's columns already count from 1.
                (line > 0 && column >= 0).then_some((line as usize, (column as usize).max(1)))
            }),
            message: first.map_or_else(
                || "the expression does not parse".to_owned(),
                |error| format!("syntax error: {}", error.msg),
            ),
        }
    })
}

struct Checker<'p> {
    vocabulary: Vocabulary,
    source: String,
    source_info: &'p SourceInfo,
    /// Names bound by enclosing comprehensions (`x` in `list.exists(x, ...)`).
    bound: Vec<String>,
    needs: Needs,
    reads_clock: bool,
}

impl Checker<'_> {
    fn error(&self, id: u64, message: impl Into<String>) -> RuleError {
        RuleError {
            position: self
                .source_info
                .offset_for(id)
                .map(|(start, _)| line_and_column(&self.source, start as usize)),
            message: message.into(),
        }
    }

    /// The parser places a call at its opening parenthesis; point at the
    /// function's name instead.
    fn call_error(&self, id: u64, name: &str, message: impl Into<String>) -> RuleError {
        let mut error = self.error(id, message);
        if let Some((start, _)) = self.source_info.offset_for(id) {
            let start = start as usize;
            let before: String = self.source.chars().take(start).collect();
            if before.ends_with(name) {
                let name_start = start - name.chars().count();
                error.position = Some(line_and_column(&self.source, name_start));
            }
        }
        error
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|bound| bound == name)
    }

    fn check(&mut self, node: &mut IdedExpr) -> Result<(), RuleError> {
        let id = node.id;
        match &mut node.expr {
            Expr::Unspecified => Err(self.error(id, "incomplete expression")),
            Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => {
                if self.is_bound(name) {
                    return Ok(());
                }
                if self.vocabulary == Vocabulary::EventProperties {
                    return match name.as_str() {
                        PROPERTIES => Ok(()),
                        type_name if TYPE_NAMES.contains(&type_name) => Ok(()),
                        other => Err(self.error(
                            id,
                            format!(
                                "unknown variable `{other}`; a condition can use `properties` (the event's)"
                            ),
                        )),
                    };
                }
                match name.as_str() {
                    PROFILE => {
                        // The whole profile is used as a value.
                        self.needs.union(&Needs::everything());
                        Ok(())
                    }
                    NOW => {
                        self.reads_clock = true;
                        Ok(())
                    }
                    type_name if TYPE_NAMES.contains(&type_name) => Ok(()),
                    other => Err(self.error(
                        id,
                        format!("unknown variable `{other}`; a rule can use `profile` and `now`"),
                    )),
                }
            }
            Expr::Select(_) => self.check_select(node),
            Expr::Call(_) => self.check_call(node),
            Expr::List(list) => {
                for element in &mut list.elements {
                    self.check(element)?;
                }
                Ok(())
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(entry) = &mut entry.expr {
                        self.check(&mut entry.key)?;
                        self.check(&mut entry.value)?;
                    }
                }
                Ok(())
            }
            Expr::Struct(_) => Err(self.error(id, "message construction is not supported")),
            Expr::Comprehension(comprehension) => {
                self.check(&mut comprehension.iter_range)?;
                self.check(&mut comprehension.accu_init)?;
                let mut names = vec![
                    comprehension.iter_var.clone(),
                    comprehension.accu_var.clone(),
                ];
                names.extend(comprehension.iter_var2.clone());
                let depth = self.bound.len();
                self.bound.extend(names);
                let checked = self
                    .check(&mut comprehension.loop_cond)
                    .and_then(|()| self.check(&mut comprehension.loop_step))
                    .and_then(|()| self.check(&mut comprehension.result));
                self.bound.truncate(depth);
                checked
            }
        }
    }

    /// `profile.<field>...` paths are checked against the schema; other
    /// selections (of a bound variable, a map literal) only recurse.
    fn check_select(&mut self, node: &mut IdedExpr) -> Result<(), RuleError> {
        let id = node.id;
        let path: Option<Vec<String>> = node
            .expr
            .qualified_name_segments_public()
            .map(|segments| segments.into_iter().map(str::to_owned).collect());
        let profile_paths = self.vocabulary == Vocabulary::Profile;
        match path {
            Some(path)
                if profile_paths
                    && path.first().map(String::as_str) == Some(PROFILE)
                    && !self.is_bound(PROFILE) =>
            {
                self.check_profile_path(id, &path)
            }
            Some(path)
                if profile_paths
                    && path.first().map(String::as_str) == Some(NOW)
                    && !self.is_bound(NOW) =>
            {
                Err(self.error(
                    id,
                    format!("`now` is a timestamp; it has no field `{}`", path[1]),
                ))
            }
            _ => match &mut node.expr {
                Expr::Select(SelectExpr { operand, .. }) => self.check(operand),
                _ => Ok(()),
            },
        }
    }

    fn check_profile_path(&mut self, id: u64, path: &[String]) -> Result<(), RuleError> {
        let field = path[1].as_str();
        match field {
            "id" => self.needs.id = true,
            "traits" => match path.get(2) {
                Some(name) => self.needs.traits.add(name),
                None => self.needs.traits = NameNeeds::All,
            },
            "computed" => {
                match path.get(2) {
                    Some(name) => self.needs.computed.add(name),
                    None => self.needs.computed = NameNeeds::All,
                }
                if let Some(name) = path.get(2)
                    && name != CUSTOM
                    && !COMPUTED_FIELDS.iter().any(|(known, _)| known == name)
                {
                    return Err(self.error(
                        id,
                        format!(
                            "unknown computed trait `{name}`; known: {}",
                            COMPUTED_FIELDS.map(|(name, _)| name).join(", ")
                        ),
                    ));
                }
            }
            "consent" => {
                self.needs.consent = true;
                if let Some(purpose) = path.get(2)
                    && !crate::model::Purpose::ALL
                        .iter()
                        .any(|known| known.as_str() == purpose)
                {
                    return Err(self.error(
                        id,
                        format!(
                            "unknown consent purpose `{purpose}`; known: marketing, personalisation, analytics"
                        ),
                    ));
                }
            }
            "identifiers" => self.needs.identifiers = true,
            other => {
                return Err(self.error(
                    id,
                    format!(
                        "`profile` has no field `{other}`; it has {}",
                        PROFILE_FIELDS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_call(&mut self, node: &mut IdedExpr) -> Result<(), RuleError> {
        let id = node.id;
        let Expr::Call(call) = &mut node.expr else {
            return Ok(());
        };
        let name = call.func_name.clone();
        if !FUNCTIONS.contains(&name.as_str()) {
            return Err(self.call_error(id, &name, format!("unknown function `{name}`")));
        }
        if self.vocabulary == Vocabulary::EventProperties && name == EVENTS_IN {
            return Err(self.call_error(
                id,
                &name,
                "events_in reads a profile; a condition reads one event's properties",
            ));
        }
        match name.as_str() {
            EVENTS_IN => {
                let window = self.event_window(id, call)?;
                let key = window.key();
                self.needs.event_windows.insert(window);
                self.reads_clock = true;
                node.expr = Expr::Select(SelectExpr {
                    operand: Box::new(IdedExpr {
                        id,
                        expr: Expr::Ident(EVENT_COUNTS_VARIABLE.to_owned()),
                    }),
                    field: key,
                    test: false,
                });
                return Ok(());
            }
            GEO_DISTANCE_KM if call.target.is_some() || call.args.len() != 4 => {
                return Err(self.error(
                    id,
                    "geo_distance_km takes four numbers: lat1, lon1, lat2, lon2",
                ));
            }
            "duration" | "timestamp" => self.check_time_literal(id, call)?,
            _ => {}
        }
        self.check_comparison(id, call)?;
        if let Some(target) = &mut call.target {
            self.check(target)?;
        }
        for argument in &mut call.args {
            self.check(argument)?;
        }
        Ok(())
    }

    fn event_window(&self, id: u64, call: &CallExpr) -> Result<EventWindow, RuleError> {
        let usage = "events_in takes an event name and a window, e.g. events_in(\"Product Viewed\", duration(\"7d\"))";
        if call.target.is_some() || call.args.len() != 2 {
            return Err(self.error(id, usage));
        }
        let name = string_literal(&call.args[0]).ok_or_else(|| {
            self.error(call.args[0].id, "the event name must be a string literal")
        })?;
        let window_text = match &call.args[1].expr {
            Expr::Literal(LiteralValue::String(text)) => Some(text.inner().to_owned()),
            Expr::Call(inner) if inner.func_name == "duration" && inner.args.len() == 1 => {
                string_literal(&inner.args[0]).map(str::to_owned)
            }
            _ => None,
        }
        .ok_or_else(|| self.error(call.args[1].id, usage))?;
        let window_ms = parse_window_ms(&window_text).ok_or_else(|| {
            self.error(
                call.args[1].id,
                format!("`{window_text}` is not a window: use days, hours or minutes, e.g. \"7d\" or \"36h\""),
            )
        })?;
        if window_ms <= 0 || window_ms > WINDOW_DAYS_MAX * DAY_MS * 4 {
            return Err(self.error(
                call.args[1].id,
                format!(
                    "the window must be positive and at most {} days",
                    WINDOW_DAYS_MAX * 4
                ),
            ));
        }
        Ok(EventWindow {
            name: name.to_owned(),
            window_ms,
        })
    }

    /// `duration("30d")` and `timestamp("2026-01-01T00:00:00Z")` with
    /// literal text are checked now rather than failing every evaluation.
    /// CEL durations have no day unit; days are accepted and rewritten to
    /// hours.
    fn check_time_literal(&self, id: u64, call: &mut CallExpr) -> Result<(), RuleError> {
        let [argument] = call.args.as_mut_slice() else {
            return Ok(());
        };
        let Some(text) = string_literal(argument).map(str::to_owned) else {
            return Ok(());
        };
        if call.func_name == "duration" && text.contains('d') {
            let hours = parse_window_ms(&text)
                .map(|ms| format!("{}s", ms / 1000))
                .ok_or_else(|| self.error(id, format!("`{text}` is not a duration")))?;
            argument.expr = Expr::Literal(LiteralValue::String(hours.into()));
        }
        let probe = IdedExpr {
            id,
            expr: Expr::Call(call.clone()),
        };
        Value::resolve(&probe, &Context::default())
            .map(|_| ())
            .map_err(|error| self.error(id, format!("invalid {}: {error}", call.func_name)))
    }

    /// A computed trait compared with a literal of another type would fail
    /// on every profile; say so now.
    fn check_comparison(&self, id: u64, call: &CallExpr) -> Result<(), RuleError> {
        const COMPARISONS: [&str; 6] = ["_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_"];
        if !COMPARISONS.contains(&call.func_name.as_str()) || call.args.len() != 2 {
            return Ok(());
        }
        for (field_side, literal_side) in [(0, 1), (1, 0)] {
            let Some(field_type) = computed_field_type(&call.args[field_side]) else {
                continue;
            };
            let Expr::Literal(literal) = &call.args[literal_side].expr else {
                continue;
            };
            let compatible = match literal {
                LiteralValue::Null => true,
                LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => {
                    field_type == FieldType::Number
                }
                LiteralValue::String(_) => field_type == FieldType::Text,
                LiteralValue::Boolean(_) | LiteralValue::Bytes(_) => false,
            };
            if !compatible {
                return Err(self.error(
                    id,
                    format!(
                        "type mismatch: a {} is compared with a {}",
                        field_type.describe(),
                        describe_literal(literal)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl FieldType {
    fn describe(self) -> &'static str {
        match self {
            FieldType::Number => "number",
            FieldType::Text => "string",
            FieldType::Time => "timestamp",
            FieldType::List => "list",
            FieldType::Map => "map",
        }
    }
}

fn describe_literal(literal: &LiteralValue) -> &'static str {
    match literal {
        LiteralValue::Boolean(_) => "bool",
        LiteralValue::Bytes(_) => "bytes",
        LiteralValue::Double(_) | LiteralValue::Int(_) | LiteralValue::UInt(_) => "number",
        LiteralValue::Null => "null",
        LiteralValue::String(_) => "string",
    }
}

/// What `node` is when it can be seen without data that it is no
/// condition: a number, string, list or map (a rule that is one would
/// match nobody). `None` when it is, or may be, a boolean.
fn plainly_not_boolean(node: &IdedExpr) -> Option<&'static str> {
    const ARITHMETIC: [&str; 6] = ["_+_", "_-_", "_*_", "_/_", "_%_", "-_"];
    if let Some(field_type) = computed_field_type(node) {
        return Some(field_type.describe());
    }
    match &node.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => None,
        Expr::Literal(literal) => Some(describe_literal(literal)),
        Expr::List(_) => Some("list"),
        Expr::Map(_) => Some("map"),
        Expr::Call(call) if ARITHMETIC.contains(&call.func_name.as_str()) => Some("number"),
        _ => None,
    }
}

/// The type of `profile.computed.<name>` when `node` is exactly that.
fn computed_field_type(node: &IdedExpr) -> Option<FieldType> {
    let Expr::Select(select) = &node.expr else {
        return None;
    };
    if select.test {
        return None;
    }
    let Expr::Select(parent) = &select.operand.expr else {
        return None;
    };
    let Expr::Ident(root) = &parent.operand.expr else {
        return None;
    };
    if root != PROFILE || parent.field != "computed" {
        return None;
    }
    COMPUTED_FIELDS
        .iter()
        .find(|(name, _)| *name == select.field)
        .map(|(_, field_type)| *field_type)
}

fn string_literal(node: &IdedExpr) -> Option<&str> {
    match &node.expr {
        Expr::Literal(LiteralValue::String(text)) => Some(text.inner()),
        _ => None,
    }
}

/// Parses windows such as `7d`, `36h`, `1d12h` or `90m` into milliseconds.
pub fn parse_window_ms(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let amount: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next()? {
                'd' => (DAY_MS, 1),
                'h' => (3_600_000, 1),
                'm' => (60_000, 1),
                's' => (1_000, 1),
                _ => return None,
            }
        };
        total = total.checked_add(amount.checked_mul(unit_ms)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// 1-based line and column of a character offset.
fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for character in source.chars().take(offset) {
        if character == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

trait QualifiedName {
    fn qualified_name_segments_public(&self) -> Option<Vec<&str>>;
}

impl QualifiedName for Expr {
    /// `a.b.c` as `["a", "b", "c"]`; `None` when the chain does not start at
    /// a plain name or contains a presence test in the middle.
    fn qualified_name_segments_public(&self) -> Option<Vec<&str>> {
        let mut segments = Vec::new();
        let mut expr = self;
        let mut outermost = true;
        loop {
            match expr {
                Expr::Ident(name) => {
                    segments.push(name.as_str());
                    segments.reverse();
                    return Some(segments);
                }
                Expr::Select(select) if outermost || !select.test => {
                    segments.push(select.field.as_str());
                    expr = &select.operand.expr;
                    outermost = false;
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(source: &str) -> RuleError {
        Rule::compile(source).expect_err(source)
    }

    #[test]
    fn design_examples_compile_and_record_what_they_read() {
        let rule = Rule::compile(
            r#"profile.computed.lifecycle_stage == "lapsing" && profile.computed.monetary >= 500.0"#,
        )
        .expect("compiles");
        assert!(rule.needs().computed.wants("monetary"));
        assert!(!rule.needs().computed.wants("frequency"));
        assert_eq!(rule.needs().traits, NameNeeds::None);
        let rule = Rule::compile(
            "geo_distance_km(profile.traits.location.lat, profile.traits.location.lon, 51.5072, -0.1276) < 25.0",
        )
        .expect("compiles");
        assert!(rule.needs().traits.wants("location"));
        assert!(!rule.needs().traits.wants("city"));
        assert!(!rule.depends_on_time());
        let rule =
            Rule::compile(r#"events_in("Product Viewed", duration("7d")) > 2"#).expect("compiles");
        assert!(rule.depends_on_time());
        assert_eq!(
            rule.needs().event_windows.iter().next(),
            Some(&EventWindow {
                name: "Product Viewed".to_owned(),
                window_ms: 7 * DAY_MS
            })
        );
    }

    #[test]
    fn a_rule_that_is_no_condition_is_rejected_where_it_starts() {
        for source in [
            "profile.computed.monetary",
            "profile.computed.monetary + 1.0",
            "'gold'",
            "[true]",
            "42",
        ] {
            let error = error_of(source);
            assert!(error.message.contains("true or false"), "{source}: {error}");
            assert!(error.position.is_some(), "{source}: {error}");
        }
        Rule::compile("true").expect("a constant condition compiles");
        Rule::compile("profile.traits.vip").expect("a trait may hold a boolean");
    }

    #[test]
    fn syntax_errors_point_at_the_column_of_the_mistake() {
        let error = error_of("profile.computed.frequency > > 1");
        assert_eq!(error.position, Some((1, 30)), "{error}");
        let error = error_of("1 +");
        assert_eq!(error.position, Some((1, 4)), "{error}");
    }

    #[test]
    fn comprehension_variables_are_in_scope_only_inside() {
        Rule::compile(r#"profile.computed.interests.exists(i, i == "shoes")"#).expect("compiles");
        let error = error_of(r#"profile.computed.interests.exists(i, i == "shoes") && i == "x""#);
        assert!(error.message.contains("unknown variable `i`"), "{error}");
    }

    #[test]
    fn positions_point_at_the_mistake() {
        let error = error_of("profile.traits.plan == \"gold\" &&\n  nope(1)");
        assert_eq!(error.position, Some((2, 3)), "{error}");
        let error = error_of(
            "profile.computed.lifecycle_stage == 'a' || profile.computed.frequency == 'x'",
        );
        assert!(error.message.contains("type mismatch"), "{error}");
    }

    #[test]
    fn every_allowed_standard_function_exists_in_the_interpreter() {
        let evaluator = super::super::evaluate::Evaluator::default();
        let _ = evaluator;
        let samples = [
            "size('abc') == 3",
            "'abc'.contains('b')",
            "'abc'.startsWith('a')",
            "'abc'.endsWith('c')",
            "'abc'.matches('^a')",
            "int('3') == 3",
            "uint(3) == 3u",
            "double(3) == 3.0",
            "string(3) == '3'",
            "bool('true')",
            "timestamp('2026-01-01T00:00:00Z').getFullYear() == 2026",
            "timestamp('2026-01-05T10:11:12Z').getMonth() == 0",
            "timestamp('2026-01-05T10:11:12Z').getDate() == 5",
            "timestamp('2026-01-05T10:11:12Z').getDayOfMonth() == 4",
            "timestamp('2026-01-05T10:11:12Z').getDayOfWeek() == 1",
            "timestamp('2026-01-05T10:11:12Z').getDayOfYear() == 4",
            "timestamp('2026-01-05T10:11:12Z').getHours() == 10",
            "timestamp('2026-01-05T10:11:12Z').getMinutes() == 11",
            "timestamp('2026-01-05T10:11:12Z').getSeconds() == 12",
            "timestamp('2026-01-05T10:11:12Z').getMilliseconds() == 0",
            "duration('2d') == duration('48h')",
            "type(1) == int",
            "dyn(1) == 1",
            "[1, 2].all(x, x > 0)",
            "[1, 2].exists_one(x, x > 1)",
            "[1, 2].filter(x, x > 1).size() == 1",
            "[1, 2].map(x, x * 2)[1] == 4",
            "{'a': 1}.a == 1",
            "1 in [1]",
            "bytes('a') == b'a'",
        ];
        for source in samples {
            let rule = Rule::compile(source).unwrap_or_else(|error| panic!("{source}: {error}"));
            let context = cel::Context::default();
            assert!(rule.matches(&context), "{source}");
        }
    }

    #[test]
    fn windows_parse_in_days_hours_and_minutes() {
        assert_eq!(parse_window_ms("7d"), Some(7 * DAY_MS));
        assert_eq!(parse_window_ms("1d12h"), Some(36 * 3_600_000));
        assert_eq!(parse_window_ms("90m"), Some(90 * 60_000));
        assert_eq!(parse_window_ms("seven"), None);
        assert_eq!(parse_window_ms("7"), None);
        assert_eq!(parse_window_ms(""), None);
    }
}
