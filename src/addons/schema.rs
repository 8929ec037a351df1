//! JSON Schema for what addons declare: action inputs, addon and widget config. Validation is
//! the `jsonschema` crate's (draft 2020-12 unless `$schema` names another draft), with no
//! network or file resolution: a `$ref` must point inside the schema. What stays addond's own:
//! the keywords a schema may use (the standard vocabularies; anything else is refused when
//! the manifest is registered, naming the keyword, so a typo is not silently ignored), the
//! defaults filled into missing object properties before validation, and the error messages,
//! which name the path of the bad value (`data.items[2].sku: …`). Compiled validators are
//! kept, so a call costs one validation, not a compilation.

use std::sync::{Arc, LazyLock};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{PatternOptions, ValidationError, Validator};
use serde_json::{Map, Value};

/// Every keyword of the standard vocabularies (2020-12, and draft 7's names), plus the
/// annotations. A schema with any other key is refused.
const KEYWORDS: &[&str] = &[
    // core
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "definitions",
    // applicators
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
    "prefixItems",
    "items",
    "additionalItems",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    // validation
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    // annotations (`format` included: an annotation in 2020-12, not checked)
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
];

/// Keywords whose value is one schema, a list of schemas, or a map of names to schemas:
/// where [`check_keywords`] descends.
const ONE: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "items",
    "additionalItems",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
];
const LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
const MAP: &[&str] = &["properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"];

/// A compiled validator and the schema it was compiled from.
struct Compiled {
    /// The schema, compared on every lookup: the key is only where it lived.
    schema: Value,
    /// What validates against it.
    validator: Validator,
}

/// Compiled validators by the address of the schema they were asked for. Manifests keep
/// their schemas in place, so a call finds its validator with one pointer lookup and one
/// comparison (cheaper than serialising the schema into a key); a schema that moved or
/// changed fails the comparison and is compiled again. The bound keeps temporaries and a
/// stream of re-registrations from growing it without end.
static COMPILED: LazyLock<moka::sync::Cache<usize, Arc<Compiled>>> = LazyLock::new(|| moka::sync::Cache::new(1024));

/// Compiles `schema`: offline (a `$ref` outside the schema fails here), and with the `regex`
/// engine for `pattern`, which runs in linear time (no look-around or back-references: a
/// pattern that needs them is refused rather than risking catastrophic backtracking on
/// what callers send).
fn compile(schema: &Value) -> Result<Arc<Compiled>, ValidationError<'static>> {
    let key = schema as *const Value as usize;
    if let Some(c) = COMPILED.get(&key).filter(|c| c.schema == *schema) {
        return Ok(c);
    }
    let validator = jsonschema::options().offline().with_pattern_options(PatternOptions::regex()).build(schema)?;
    let c = Arc::new(Compiled { schema: schema.clone(), validator });
    COMPILED.insert(key, c.clone());
    Ok(c)
}

/// Checks that `schema` can be validated: standard keywords only, valid against its draft's
/// meta-schema, every `$ref` resolvable inside it, every `pattern` one the linear-time engine
/// takes, and every `default` valid against its own schema. `path` prefixes the error.
pub fn check_schema(schema: &Value, path: &str) -> Result<(), String> {
    check_keywords(schema, path)?;
    compile(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        let what = at.trim_start_matches('/').replace('/', ".");
        let here = if what.is_empty() { path.to_string() } else { format!("{path}.{what}") };
        format!("{here}: this schema cannot be used: {e}")
    })?;
    check_defaults(schema, schema, path)
}

fn check_keywords(schema: &Value, path: &str) -> Result<(), String> {
    let Some(obj) = schema.as_object() else {
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{path}: a schema must be an object (or true / false)")),
        };
    };
    for (k, v) in obj {
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(format!(
                "{path}: unknown schema keyword `{k}` (JSON Schema 2020-12 keywords are supported; annotations of your own are not, to catch typos)"
            ));
        }
        let here = format!("{path}.{k}");
        match v {
            Value::Object(m) if MAP.contains(&k.as_str()) => {
                for (name, sub) in m {
                    // `dependencies` (draft 7) maps to a schema or to a list of names.
                    if !(k == "dependencies" && sub.is_array()) {
                        check_keywords(sub, &format!("{here}.{name}"))?;
                    }
                }
            }
            Value::Array(a) if LIST.contains(&k.as_str()) => {
                for (i, sub) in a.iter().enumerate() {
                    check_keywords(sub, &format!("{here}[{i}]"))?;
                }
            }
            _ if ONE.contains(&k.as_str()) => check_keywords(v, &here)?,
            _ => {}
        }
    }
    Ok(())
}

/// Every `default` along `properties` (what [`apply_defaults`] fills in) must pass its own
/// schema; `root` lends its `$defs` so a `$ref` inside still resolves.
fn check_defaults(schema: &Value, root: &Value, path: &str) -> Result<(), String> {
    let Some(obj) = schema.as_object() else { return Ok(()) };
    if let Some(d) = obj.get("default") {
        let mut alone = schema.clone();
        if let (Some(a), Some(r)) = (alone.as_object_mut(), root.as_object()) {
            for k in ["$defs", "definitions"] {
                if let (false, Some(defs)) = (a.contains_key(k), r.get(k)) {
                    a.insert(k.to_string(), defs.clone());
                }
            }
        }
        let v = compile(&alone).map_err(|e| format!("{path}: this schema cannot be used: {e}"))?;
        first_error(&v.validator, d, &format!("{path}.default")).map_err(|e| format!("the default does not match its own schema: {e}"))?;
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            check_defaults(sub, root, &format!("{path}.properties.{name}"))?;
        }
    }
    Ok(())
}

/// Validates `value` against `schema`; the error names the path of the first bad value.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if schema.is_null() {
        return Ok(());
    }
    let v = compile(schema).map_err(|e| format!("{path}: the schema cannot be used: {e}"))?;
    first_error(&v.validator, value, path)
}

fn first_error(v: &Validator, value: &Value, path: &str) -> Result<(), String> {
    match v.validate(value) {
        Ok(()) => Ok(()),
        Err(e) => Err(describe(&e, path)),
    }
}

/// One error in addond's words: `<path of the value>: <what is wrong>`.
fn describe(e: &ValidationError<'_>, base: &str) -> String {
    let mut path = base.to_string();
    for seg in e.instance_path().iter() {
        match seg {
            LocationSegment::Property(p) => path = join(&path, &p),
            LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    let value = e.instance();
    let num = |v: &Value| v.to_string();
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            format!("{}: required property is missing", join(&path, property.as_str().unwrap_or_default()))
        }
        ValidationErrorKind::AdditionalProperties { unexpected } | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            format!("{}: unknown property", join(&path, unexpected.first().map(String::as_str).unwrap_or_default()))
        }
        ValidationErrorKind::Type { kind: want } => {
            let want = match want {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
            };
            format!("{path}: expected {want}, got {}", kind(value))
        }
        ValidationErrorKind::Enum { options } => format!("{path}: {value} is not one of {options}"),
        ValidationErrorKind::Constant { expected_value } => format!("{path}: must be {expected_value}"),
        ValidationErrorKind::Minimum { limit } => format!("{path}: {value} is less than the minimum {}", num(limit)),
        ValidationErrorKind::Maximum { limit } => format!("{path}: {value} is more than the maximum {}", num(limit)),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("{path}: {value} must be more than {}", num(limit)),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("{path}: {value} must be less than {}", num(limit)),
        ValidationErrorKind::MinLength { limit } => format!("{path}: shorter than {limit} characters"),
        ValidationErrorKind::MaxLength { limit } => format!("{path}: longer than {limit} characters"),
        ValidationErrorKind::MinItems { limit } => format!("{path}: fewer than {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("{path}: more than {limit} items"),
        ValidationErrorKind::MinProperties { limit } => format!("{path}: fewer than {limit} properties"),
        ValidationErrorKind::MaxProperties { limit } => format!("{path}: more than {limit} properties"),
        ValidationErrorKind::FalseSchema => format!("{path}: no value is allowed here"),
        ValidationErrorKind::Pattern { pattern } => format!("{path}: does not match the pattern `{pattern}`"),
        ValidationErrorKind::MultipleOf { multiple_of } => format!("{path}: {value} is not a multiple of {multiple_of}"),
        ValidationErrorKind::UniqueItems => format!("{path}: the items must be unique (some appear twice)"),
        ValidationErrorKind::Contains => format!("{path}: no item matches the `contains` schema"),
        ValidationErrorKind::Not { .. } => format!("{path}: must not match the `not` schema"),
        ValidationErrorKind::OneOfMultipleValid { .. } => format!("{path}: matches more than one of the `oneOf` choices"),
        ValidationErrorKind::OneOfNotValid { context } => choices(&path, "oneOf", context, base),
        ValidationErrorKind::AnyOf { context } => choices(&path, "anyOf", context, base),
        ValidationErrorKind::PropertyNames { error } => {
            format!("{path}: the property name {}: {}", error.instance(), describe(error, "name").trim_start_matches("name: "))
        }
        _ => format!("{path}: {e}"),
    }
}

/// None of `oneOf` / `anyOf` matched: say so, with the first choice's own complaint.
fn choices(path: &str, keyword: &str, context: &[Vec<ValidationError<'static>>], base: &str) -> String {
    match context.first().and_then(|c| c.first()) {
        Some(first) => format!("{path}: matches none of the `{keyword}` choices (the first: {})", describe(first, base)),
        None => format!("{path}: matches none of the `{keyword}` choices"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Fills missing object properties from their schema's `default`, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    let Some(obj) = value.as_object_mut() else { return };
    for (k, sub) in props {
        match obj.get_mut(k) {
            Some(v) => apply_defaults(sub, v),
            None => {
                if let Some(d) = sub.get("default") {
                    obj.insert(k.clone(), d.clone());
                } else if sub.get("properties").is_some() && sub.get("type").and_then(Value::as_str) == Some("object") {
                    let mut nested = Value::Object(Map::new());
                    apply_defaults(sub, &mut nested);
                    if nested.as_object().is_some_and(|m| !m.is_empty()) {
                        obj.insert(k.clone(), nested);
                    }
                }
            }
        }
    }
}

/// Whether a schema accepts everything and adds nothing (`{}` or null).
pub fn is_empty(schema: &Value) -> bool {
    schema.is_null() || schema.as_object().is_some_and(|o| o.is_empty())
}

/// Applies defaults, then validates: the value an addon receives.
pub fn normalize(schema: &Value, value: Value, path: &str) -> Result<Value, String> {
    let mut v = value;
    apply_defaults(schema, &mut v);
    validate(schema, &v, path)?;
    Ok(v)
}

#[cfg(test)]
mod tests;
