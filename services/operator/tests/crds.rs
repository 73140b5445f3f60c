//! The CustomResourceDefinitions committed in `crds/` and `charts/tern/files/crds/` are the
//! ones the Rust types generate, and their schemas follow the API conventions.

use std::path::Path;

use kube::CustomResourceExt;
use tern_operator::crd::{CRD_DIRS, Domain, Mailbox, crd_manifests};

#[test]
fn committed_crds_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in CRD_DIRS {
        for (name, generated) in crd_manifests() {
            let path = root.join(dir).join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{dir}/{name} is stale or missing: run `cargo xtask codegen` (or `cargo run -p tern-operator -- \
                 crds {}`) and commit both directories",
                CRD_DIRS.join(" ")
            );
        }
    }
}

/// Every field of the schemas has a description, so `kubectl explain` explains every field.
#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if schema.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
            missing.push(path.to_string());
        }
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                walk(&format!("{path}.{name}"), property, missing);
            }
        }
        // Items of an array of objects; an array of strings is described by the array.
        if let Some(items) = schema.get("items").filter(|i| i.get("properties").is_some()) {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for crd in [serde_json::to_value(Domain::crd()).unwrap(), serde_json::to_value(Mailbox::crd()).unwrap()] {
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = vec![];
        for part in ["spec", "status"] {
            walk(part, &schema["properties"][part], &mut missing);
        }
        assert!(missing.is_empty(), "{}: fields without a description: {missing:?}", crd["metadata"]["name"]);
    }
}

#[test]
fn printer_columns_short_names_and_status_subresource() {
    let crd = serde_json::to_value(Mailbox::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Address", "Ready", "Reason", "Usage", "Sieve", "Quota", "Messages", "Age"]);
    assert!(version["subresources"]["status"].is_object());
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["mbx"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");

    let crd = serde_json::to_value(Domain::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Domain", "Ready", "Reason", "Reclaim", "Age"]);
    assert!(version["subresources"]["status"].is_object());
}

/// The API server checks the patterns with Go's RE2; the regex crate has the same syntax.
#[test]
fn schema_patterns_accept_addresses_domains_and_quantities() {
    use tern_operator::crd::{ADDRESS_PATTERN, CATCH_ALL_PATTERN, DOMAIN_PATTERN};
    use tern_operator::quantity::QUANTITY_PATTERN;
    let check = |pattern: &str, good: &[&str], bad: &[&str]| {
        let re = regex::Regex::new(pattern).unwrap();
        for g in good {
            assert!(re.is_match(g), "{g:?} should match {pattern}");
        }
        for b in bad {
            assert!(!re.is_match(b), "{b:?} should not match {pattern}");
        }
    };
    check(
        ADDRESS_PATTERN,
        &["alice@example.com", "a.b-c_d@mail.example.co.uk", "x@e.io"],
        &[
            "Alice@example.com",
            "alice+tag@example.com",
            "alice@example",
            "@example.com",
            "a..b@example.com",
            "alice@-x.com",
            "alice",
        ],
    );
    check(CATCH_ALL_PATTERN, &["postmaster", "info@example.com"], &["Postmaster", "a@b", "@example.com", "a b"]);
    check(
        DOMAIN_PATTERN,
        &["example.com", "mail.example.co.uk", "xn--bcher-kva.de"],
        &["example", "Example.com", "-a.com", "a_b.com", "example.com."],
    );
    check(QUANTITY_PATTERN, &["1Gi", "500Mi", "1G", "0", "1024"], &["1.5Gi", "1gi", "Gi", "-1", "1GiB"]);
}

/// The spam settings' patterns accept what the mailbox service accepts (its own tests' cases
/// are among these) and refuse what it refuses, besides a few mistakes it would take.
#[test]
fn schema_patterns_of_spam_settings_follow_the_mailbox_service() {
    use tern_operator::crd::{FOLDER_PATTERN, SENDER_PATTERN};
    let check = |pattern: &str, good: &[&str], bad: &[&str]| {
        let re = regex::Regex::new(pattern).unwrap();
        for g in good {
            assert!(re.is_match(g), "{g:?} should match {pattern}");
        }
        for b in bad {
            assert!(!re.is_match(b), "{b:?} should not match {pattern}");
        }
    };
    check(
        SENDER_PATTERN,
        // The service compares case-insensitively and lower-cases what it stores, so any case
        // is taken; so are `+` and non-ASCII, which senders may have.
        &[
            "bob@example.org",
            "@example.org",
            "@lists.example.net",
            "Bob@Example.ORG",
            "bob+news@mail.example.co.uk",
            "jürgen@bücher.de",
            "\"odd\"@example.org",
        ],
        &[
            "bob",
            "bob@",
            "@",
            "a b@example.org",
            "bob@localhost",
            "a@b@example.org",
            " bob@example.org",
            "bob@example.org ",
            "bob@example..org",
            "bob@.org",
            "bob@example.org.",
            "",
        ],
    );
    let deep = ["a"; 16].join("/");
    let too_deep = ["a"; 17].join("/");
    check(
        FOLDER_PATTERN,
        &["Junk", "Spam/Suspect", "INBOX/Spam", "Courrier indésirable", "[Gmail]/Spam", deep.as_str()],
        &["", "/", "a/", "/a", "a//b", "a\0b", "a\r\nb", "a\u{85}b", "a*", "%", "Spam/%", too_deep.as_str()],
    );
    // The pattern spells the control characters as ranges: they are exactly what the service
    // refuses (`char::is_control`, Unicode's Cc, all below U+00A0).
    let re = regex::Regex::new(FOLDER_PATTERN).unwrap();
    for c in ('\0'..='\u{2fff}').filter(|c| !"/*%".contains(*c)) {
        assert_eq!(re.is_match(&format!("a{c}b")), !c.is_control(), "{c:?}");
    }
}

/// The YAML reads back as the same CRDs (quoting of the patterns, folded descriptions).
#[test]
fn yaml_reads_back_as_the_same_crds() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds = crd_manifests();
    for ((name, yaml), crd) in crds.iter().zip([Domain::crd(), Mailbox::crd()]) {
        let read: CustomResourceDefinition = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read, crd, "{name}");
    }
}

/// Checks `value` against an OpenAPI v3 schema of a CRD, as the API server would with strict
/// field validation: types, required fields, enums, patterns, lengths and unknown fields.
fn validate(path: &str, value: &serde_json::Value, schema: &serde_json::Value, errors: &mut Vec<String>) {
    use serde_json::Value;
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let type_ok = match schema["type"].as_str() {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!("{path}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let (Some(allowed), Some(text)) = (schema["enum"].as_array(), value.as_str())
        && !allowed.iter().any(|a| a == text)
    {
        errors.push(format!("{path}: {text:?} is not one of {allowed:?}"));
    }
    if let Some(text) = value.as_str() {
        if let Some(pattern) = schema["pattern"].as_str()
            && !regex::Regex::new(pattern).unwrap().is_match(text)
        {
            errors.push(format!("{path}: {text:?} does not match {pattern}"));
        }
        let chars = text.chars().count() as u64;
        if schema["maxLength"].as_u64().is_some_and(|max| chars > max)
            || schema["minLength"].as_u64().is_some_and(|min| chars < min)
        {
            errors.push(format!("{path}: length {chars} out of bounds"));
        }
    }
    if let Value::Array(items) = value
        && schema["maxItems"].as_u64().is_some_and(|max| items.len() as u64 > max)
    {
        errors.push(format!("{path}: {} items, more than {}", items.len(), schema["maxItems"]));
    }
    if let Value::Array(items) = value {
        for (i, item) in items.iter().enumerate() {
            validate(&format!("{path}[{i}]"), item, &schema["items"], errors);
        }
    }
    if let (Value::Object(fields), Some(properties)) = (value, schema["properties"].as_object()) {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(required.as_str().unwrap()) {
                errors.push(format!("{path}: {required} is required"));
            }
        }
        for (name, field) in fields {
            match properties.get(name) {
                Some(property) => validate(&format!("{path}.{name}"), field, property, errors),
                None => errors.push(format!("{path}: unknown field {name:?}")),
            }
        }
    }
}

/// The example resources of `examples/` (a Domain, a Mailbox) are valid against the CRDs.
#[test]
fn examples_are_valid_against_the_crds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let schemas: Vec<(String, serde_json::Value)> =
        [serde_json::to_value(Domain::crd()).unwrap(), serde_json::to_value(Mailbox::crd()).unwrap()]
            .into_iter()
            .map(|crd| {
                (
                    crd["spec"]["names"]["kind"].as_str().unwrap().to_string(),
                    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
                )
            })
            .collect();
    let mut checked = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml" && e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let document: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let Some((kind, schema)) = schemas.iter().find(|(kind, _)| document["kind"] == kind.as_str()) else { continue };
        assert_eq!(document["apiVersion"], "mail.tern.dev/v1alpha1", "{}", path.display());
        let mut errors = vec![];
        for part in ["spec", "status"] {
            if let Some(value) = document.get(part) {
                validate(part, value, &schema["properties"][part], &mut errors);
            }
        }
        assert!(errors.is_empty(), "{} ({kind}): {errors:?}", path.display());
        match kind.as_str() {
            "Domain" => drop(serde_json::from_value::<Domain>(document).unwrap()),
            _ => drop(serde_json::from_value::<Mailbox>(document).unwrap()),
        }
        checked += 1;
    }
    assert!(checked > 0 || !dir.join("mailbox.yaml").exists(), "no example was checked");
}

#[test]
fn the_validator_refuses_what_the_api_server_would() {
    let crd = serde_json::to_value(Mailbox::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let bad = serde_json::json!({
        "address": "Alice@example.com",
        "passwordSecretRef": {"name": "x"},
        "quota": "1.5Gi",
        "aliases": ["not an address"],
        "pop3DeletePolicy": "delete",
        "suspended": "no",
        "colour": "blue",
    });
    let mut errors = vec![];
    validate("spec", &bad, schema, &mut errors);
    assert_eq!(errors.len(), 7, "{errors:#?}");
}

/// The spam settings of a Domain and a Mailbox: the example's shape is valid, and what the API
/// server would refuse is refused, among it a boolean `scan` (what an unquoted On would be to kubectl).
#[test]
fn spam_settings_are_validated() {
    use serde_json::json;
    for crd in [serde_json::to_value(Domain::crd()).unwrap(), serde_json::to_value(Mailbox::crd()).unwrap()] {
        let schema =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["spam"];
        let good = json!({
            "scan": "Disabled",
            "junkFolder": "Spam/Suspect",
            "allowSenders": ["@partner.example", "Bob@Example.org"],
            "blockSenders": ["offers@shop.example"],
        });
        let mut errors = vec![];
        validate("spec.spam", &good, schema, &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
        validate("spec.spam", &json!({}), schema, &mut errors);
        assert!(errors.is_empty(), "every field is optional: {errors:#?}");

        let senders: Vec<String> = (0..1001).map(|i| format!("u{i}@example.org")).collect();
        let bad = json!({
            "scan": true,
            "junkFolder": "Spam//Suspect",
            "allowSenders": ["bob@localhost"],
            "blockSenders": senders,
            "learn": true,
        });
        let mut errors = vec![];
        validate("spec.spam", &bad, schema, &mut errors);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        for value in ["Inherit", "Enabled", "Disabled"] {
            let mut errors = vec![];
            validate("spec.spam", &json!({ "scan": value }), schema, &mut errors);
            assert!(errors.is_empty(), "{value}: {errors:?}");
        }
        assert_eq!(schema["properties"]["scan"]["default"], "Inherit");
    }
}

/// The Sieve settings of a Mailbox: the name is checked as RFC 5804 names are (the mailbox
/// service's `check_name`, but for U+2028 and U+2029, which it refuses itself), `name`
/// defaults to `kubernetes`, and unknown fields are refused.
#[test]
fn sieve_settings_are_validated() {
    use serde_json::json;
    use tern_operator::crd::SIEVE_NAME_PATTERN;
    let crd = serde_json::to_value(Mailbox::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["sieve"];
    assert_eq!(schema["properties"]["name"]["default"], "kubernetes");
    let long = "n".repeat(128);
    for good in [
        json!({"script": "require \"fileinto\";\nfileinto \"Lists\";\n"}),
        json!({"name": long, "configMapKeyRef": {"name": "alice-sieve", "key": "filter.sieve"}}),
        json!({"name": "Mes règles ✉", "script": "keep;"}),
    ] {
        let mut errors = vec![];
        validate("spec.sieve", &good, schema, &mut errors);
        assert!(errors.is_empty(), "{good}: {errors:#?}");
    }
    let bad = json!({
        "name": "a\tb",
        "configMapKeyRef": {"name": "", "key": "k"},
        "script": 5,
        "active": true,
    });
    let mut errors = vec![];
    validate("spec.sieve", &bad, schema, &mut errors);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let mut errors = vec![];
    validate("spec.sieve", &json!({"name": "n".repeat(129), "script": "keep;"}), schema, &mut errors);
    // The empty name is too short and matches no pattern: two errors.
    validate("spec.sieve", &json!({"name": "", "script": "keep;"}), schema, &mut errors);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let re = regex::Regex::new(SIEVE_NAME_PATTERN).unwrap();
    for c in ('\0'..='\u{2fff}').filter(|c| !matches!(c, '\u{2028}' | '\u{2029}')) {
        assert_eq!(re.is_match(&format!("a{c}b")), !c.is_control(), "{c:?}");
    }
}

/// The CEL rules (`x-kubernetes-validations`) of the CRDs, evaluated offline: each parses (in
/// the subset of CEL that [`cel`] implements, which the rules keep to), names only fields of
/// the schema, has a message, and accepts and refuses the sample objects as the API server
/// would. A rule without samples here fails the test.
#[test]
fn cel_rules_parse_name_real_fields_and_judge_samples() {
    use serde_json::{Value, json};
    // (kind, path of the schema holding the rule, self, oldSelf (None on create), allowed)
    let mut samples: Vec<(&str, &str, Value, Option<Value>, bool)> = vec![
        ("Domain", "spec.name", json!("example.com"), Some(json!("example.com")), true),
        ("Domain", "spec.name", json!("example.org"), Some(json!("example.com")), false),
        ("Mailbox", "spec.address", json!("alice@example.com"), Some(json!("alice@example.com")), true),
        ("Mailbox", "spec.address", json!("bob@example.com"), Some(json!("alice@example.com")), false),
        ("Mailbox", "spec", json!({"address": "alice@example.com"}), None, true),
        ("Mailbox", "spec", json!({"address": "alice@example.com", "aliases": []}), None, true),
        (
            "Mailbox",
            "spec",
            json!({"address": "a@example.com", "aliases": ["info@example.com", "a@example.org"]}),
            None,
            true,
        ),
        (
            "Mailbox",
            "spec",
            json!({"address": "a@example.com", "aliases": ["info@example.com", "a@example.com"]}),
            None,
            false,
        ),
    ];
    // A Sieve script comes from exactly one place.
    for (sieve, allowed) in [
        (json!({"name": "kubernetes", "script": "keep;"}), true),
        (json!({"name": "filters", "configMapKeyRef": {"name": "alice-sieve", "key": "filter.sieve"}}), true),
        (json!({"name": "kubernetes"}), false),
        (json!({"name": "kubernetes", "script": "keep;", "configMapKeyRef": {"name": "a", "key": "b"}}), false),
    ] {
        samples.push(("Mailbox", "spec.sieve", sieve, None, allowed));
    }
    // The junk folder is never INBOX, in any case; a folder under INBOX is fine.
    for kind in ["Domain", "Mailbox"] {
        for (folder, allowed) in
            [("Junk", true), ("INBOX/Spam", true), ("inboxes", true), ("INBOX", false), ("InBox", false)]
        {
            samples.push((kind, "spec.spam.junkFolder", json!(folder), None, allowed));
        }
    }
    let mut checked = std::collections::BTreeSet::new();
    for crd in [serde_json::to_value(Domain::crd()).unwrap(), serde_json::to_value(Mailbox::crd()).unwrap()] {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut rules = vec![];
        cel::collect_rules("", root, &mut rules);
        assert!(!rules.is_empty(), "{kind} has no CEL rules");
        for (path, schema, rule) in rules {
            let expression = rule["rule"].as_str().unwrap();
            assert!(rule["message"].as_str().is_some_and(|m| m.len() > 10), "{kind} {path}: {rule} has no message");
            let ast = cel::parse(expression).unwrap_or_else(|e| panic!("{kind} {path}: {expression:?}: {e}"));
            cel::check_fields(&ast, schema).unwrap_or_else(|e| panic!("{kind} {path}: {expression:?}: {e}"));
            let mine: Vec<_> = samples.iter().filter(|s| s.0 == kind && s.1 == path).collect();
            assert!(!mine.is_empty(), "{kind} {path}: no samples for {expression:?}");
            for (_, _, value, old, allowed) in mine {
                // A transition rule (with oldSelf) is only evaluated on updates.
                if old.is_none() && expression.contains("oldSelf") {
                    continue;
                }
                let result = cel::eval(&ast, value, old.as_ref());
                assert_eq!(result, Ok(Value::Bool(*allowed)), "{kind} {path}: {expression:?} on {value} (old {old:?})");
            }
            checked.insert((kind.clone(), path));
        }
    }
    let wanted: std::collections::BTreeSet<_> = samples.iter().map(|s| (s.0.to_string(), s.1.to_string())).collect();
    assert_eq!(checked, wanted, "samples for rules that are not in the CRDs");
}

/// The part of CEL the CRDs' rules use, parsed and evaluated over JSON values: literals,
/// `self` and `oldSelf`, field selection, `has()`, `size()`, `in`, comparisons, `!`, `&&`, `||`,
/// `+`, and the `all`/`exists` macros and the string methods `startsWith`, `endsWith`,
/// `contains` and `lowerAscii` (of the Kubernetes strings library).
mod cel {
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Expr {
        Literal(Value),
        Ident(String),
        Select(Box<Expr>, String),
        Index(Box<Expr>, Box<Expr>),
        Call(Option<Box<Expr>>, String, Vec<Expr>),
        Unary(&'static str, Box<Expr>),
        Binary(String, Box<Expr>, Box<Expr>),
        List(Vec<Expr>),
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Ident(String),
        Str(String),
        Int(i64),
        Op(String),
    }

    fn tokens(text: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = vec![];
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            } else if c.is_ascii_digit() {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().collect();
                out.push(Token::Int(digits.parse().map_err(|e| format!("{digits}: {e}"))?));
            } else if c == '\'' || c == '"' {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    s.push(*chars.get(i).ok_or("unterminated string")?);
                    i += 1;
                }
                if i == chars.len() {
                    return Err("unterminated string".into());
                }
                i += 1;
                out.push(Token::Str(s));
            } else {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["==", "!=", "<=", ">=", "&&", "||"].contains(&two.as_str()) {
                    out.push(Token::Op(two));
                    i += 2;
                } else if "()[].,!<>+-".contains(c) {
                    out.push(Token::Op(c.to_string()));
                    i += 1;
                } else {
                    return Err(format!("unexpected {c:?}"));
                }
            }
        }
        Ok(out)
    }

    struct Parser {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Parser {
        fn peek_op(&self, op: &str) -> bool {
            matches!(self.tokens.get(self.at), Some(Token::Op(o)) if o == op)
        }

        fn peek_ident(&self, name: &str) -> bool {
            matches!(self.tokens.get(self.at), Some(Token::Ident(i)) if i == name)
        }

        fn expect(&mut self, op: &str) -> Result<(), String> {
            if self.peek_op(op) {
                self.at += 1;
                Ok(())
            } else {
                Err(format!("expected {op:?} at token {}", self.at))
            }
        }

        fn or(&mut self) -> Result<Expr, String> {
            let mut left = self.and()?;
            while self.peek_op("||") {
                self.at += 1;
                left = Expr::Binary("||".into(), Box::new(left), Box::new(self.and()?));
            }
            Ok(left)
        }

        fn and(&mut self) -> Result<Expr, String> {
            let mut left = self.relation()?;
            while self.peek_op("&&") {
                self.at += 1;
                left = Expr::Binary("&&".into(), Box::new(left), Box::new(self.relation()?));
            }
            Ok(left)
        }

        fn relation(&mut self) -> Result<Expr, String> {
            let left = self.additive()?;
            for op in ["==", "!=", "<=", ">=", "<", ">"] {
                if self.peek_op(op) {
                    self.at += 1;
                    return Ok(Expr::Binary(op.into(), Box::new(left), Box::new(self.additive()?)));
                }
            }
            if self.peek_ident("in") {
                self.at += 1;
                return Ok(Expr::Binary("in".into(), Box::new(left), Box::new(self.additive()?)));
            }
            Ok(left)
        }

        fn additive(&mut self) -> Result<Expr, String> {
            let mut left = self.unary()?;
            while self.peek_op("+") || self.peek_op("-") {
                let Some(Token::Op(op)) = self.tokens.get(self.at).cloned() else { unreachable!() };
                self.at += 1;
                left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
            }
            Ok(left)
        }

        fn unary(&mut self) -> Result<Expr, String> {
            if self.peek_op("!") {
                self.at += 1;
                return Ok(Expr::Unary("!", Box::new(self.unary()?)));
            }
            if self.peek_op("-") {
                self.at += 1;
                return Ok(Expr::Unary("-", Box::new(self.unary()?)));
            }
            self.member()
        }

        fn args(&mut self) -> Result<Vec<Expr>, String> {
            let mut args = vec![];
            if !self.peek_op(")") {
                args.push(self.or()?);
                while self.peek_op(",") {
                    self.at += 1;
                    args.push(self.or()?);
                }
            }
            self.expect(")")?;
            Ok(args)
        }

        fn member(&mut self) -> Result<Expr, String> {
            let mut expr = self.primary()?;
            loop {
                if self.peek_op(".") {
                    self.at += 1;
                    let Some(Token::Ident(name)) = self.tokens.get(self.at).cloned() else {
                        return Err("expected a field or method name after '.'".into());
                    };
                    self.at += 1;
                    if self.peek_op("(") {
                        self.at += 1;
                        expr = Expr::Call(Some(Box::new(expr)), name, self.args()?);
                    } else {
                        expr = Expr::Select(Box::new(expr), name);
                    }
                } else if self.peek_op("[") {
                    self.at += 1;
                    let index = self.or()?;
                    self.expect("]")?;
                    expr = Expr::Index(Box::new(expr), Box::new(index));
                } else {
                    return Ok(expr);
                }
            }
        }

        fn primary(&mut self) -> Result<Expr, String> {
            let token = self.tokens.get(self.at).cloned().ok_or("unexpected end")?;
            self.at += 1;
            match token {
                Token::Str(s) => Ok(Expr::Literal(Value::String(s))),
                Token::Int(n) => Ok(Expr::Literal(Value::from(n))),
                Token::Ident(name) if name == "true" || name == "false" => {
                    Ok(Expr::Literal(Value::Bool(name == "true")))
                }
                Token::Ident(name) if name == "null" => Ok(Expr::Literal(Value::Null)),
                Token::Ident(name) if self.peek_op("(") => {
                    self.at += 1;
                    Ok(Expr::Call(None, name, self.args()?))
                }
                Token::Ident(name) => Ok(Expr::Ident(name)),
                Token::Op(op) if op == "(" => {
                    let inner = self.or()?;
                    self.expect(")")?;
                    Ok(inner)
                }
                Token::Op(op) if op == "[" => {
                    let mut items = vec![];
                    if !self.peek_op("]") {
                        items.push(self.or()?);
                        while self.peek_op(",") {
                            self.at += 1;
                            items.push(self.or()?);
                        }
                    }
                    self.expect("]")?;
                    Ok(Expr::List(items))
                }
                other => Err(format!("unexpected {other:?}")),
            }
        }
    }

    /// Parses `text`, which must be one whole expression.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut parser = Parser { tokens: tokens(text)?, at: 0 };
        let expr = parser.or()?;
        if parser.at != parser.tokens.len() {
            return Err(format!("unexpected {:?}", parser.tokens[parser.at]));
        }
        Ok(expr)
    }

    /// Every rule of `schema` and below: (path, the schema holding it, the rule).
    pub fn collect_rules<'a>(path: &str, schema: &'a Value, out: &mut Vec<(String, &'a Value, &'a Value)>) {
        for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
            out.push((path.to_string(), schema, rule));
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            collect_rules(&child, property, out);
        }
        if schema["items"].is_object() {
            collect_rules(&format!("{path}[]"), &schema["items"], out);
        }
    }

    /// The schema `expr` selects from `schema` when it is a chain of fields from `self` or
    /// `oldSelf`: an error when a field is not in the schema.
    fn schema_of<'a>(expr: &Expr, schema: &'a Value) -> Result<Option<&'a Value>, String> {
        match expr {
            Expr::Ident(name) if name == "self" || name == "oldSelf" => Ok(Some(schema)),
            Expr::Select(inner, field) => match schema_of(inner, schema)? {
                Some(s) if s["properties"].is_object() => {
                    s["properties"].get(field).map(Some).ok_or_else(|| format!("no field {field:?} in the schema"))
                }
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// Checks that every field the expression selects from `self` or `oldSelf` exists.
    pub fn check_fields(expr: &Expr, schema: &Value) -> Result<(), String> {
        schema_of(expr, schema)?;
        match expr {
            Expr::Literal(_) | Expr::Ident(_) => Ok(()),
            Expr::Select(inner, _) | Expr::Unary(_, inner) => check_fields(inner, schema),
            Expr::Index(a, b) | Expr::Binary(_, a, b) => check_fields(a, schema).and(check_fields(b, schema)),
            Expr::Call(target, _, args) => {
                if let Some(t) = target {
                    check_fields(t, schema)?;
                }
                args.iter().try_for_each(|a| check_fields(a, schema))
            }
            Expr::List(items) => items.iter().try_for_each(|a| check_fields(a, schema)),
        }
    }

    type Scope = Vec<(String, Value)>;

    fn lookup(scope: &Scope, name: &str) -> Result<Value, String> {
        scope.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone()).ok_or(format!("undeclared {name}"))
    }

    fn truth(value: Value) -> Result<bool, String> {
        value.as_bool().ok_or(format!("{value} is not a bool"))
    }

    fn text(value: &Value) -> Result<&str, String> {
        value.as_str().ok_or(format!("{value} is not a string"))
    }

    fn eval_in(expr: &Expr, scope: &mut Scope) -> Result<Value, String> {
        Ok(match expr {
            Expr::Literal(v) => v.clone(),
            Expr::Ident(name) => lookup(scope, name)?,
            Expr::List(items) => Value::Array(items.iter().map(|i| eval_in(i, scope)).collect::<Result<_, _>>()?),
            Expr::Select(inner, field) => {
                let value = eval_in(inner, scope)?;
                value.get(field).cloned().ok_or(format!("no such key: {field}"))?
            }
            Expr::Index(inner, index) => {
                let (value, index) = (eval_in(inner, scope)?, eval_in(index, scope)?);
                let found = match &index {
                    Value::Number(n) => n.as_u64().and_then(|i| value.get(i as usize)),
                    Value::String(s) => value.get(s),
                    _ => None,
                };
                found.cloned().ok_or(format!("no index {index} in {value}"))?
            }
            Expr::Unary(op, inner) => {
                let value = eval_in(inner, scope)?;
                match *op {
                    "!" => Value::Bool(!truth(value)?),
                    _ => Value::from(-value.as_i64().ok_or("not an int")?),
                }
            }
            Expr::Binary(op, a, b) if op == "&&" || op == "||" => {
                let left = truth(eval_in(a, scope)?)?;
                if (op == "&&") != left { Value::Bool(left) } else { Value::Bool(truth(eval_in(b, scope)?)?) }
            }
            Expr::Binary(op, a, b) => {
                let (left, right) = (eval_in(a, scope)?, eval_in(b, scope)?);
                match op.as_str() {
                    "==" => Value::Bool(left == right),
                    "!=" => Value::Bool(left != right),
                    "in" => Value::Bool(right.as_array().ok_or("in needs a list")?.contains(&left)),
                    "+" if left.is_string() => Value::String(format!("{}{}", text(&left)?, text(&right)?)),
                    op => {
                        let (x, y) = (left.as_i64().ok_or("not an int")?, right.as_i64().ok_or("not an int")?);
                        match op {
                            "+" => Value::from(x + y),
                            "-" => Value::from(x - y),
                            "<" => Value::Bool(x < y),
                            "<=" => Value::Bool(x <= y),
                            ">" => Value::Bool(x > y),
                            _ => Value::Bool(x >= y),
                        }
                    }
                }
            }
            Expr::Call(None, name, args) if name == "has" => {
                let [Expr::Select(inner, field)] = args.as_slice() else { return Err("has() needs a field".into()) };
                Value::Bool(eval_in(inner, scope)?.get(field).is_some())
            }
            Expr::Call(None, name, args) if name == "size" && args.len() == 1 => size(&eval_in(&args[0], scope)?)?,
            Expr::Call(Some(target), name, args) if name == "all" || name == "exists" => {
                let [Expr::Ident(var), body] = args.as_slice() else { return Err(format!("{name}(x, e)")) };
                let items = eval_in(target, scope)?;
                let items = items.as_array().ok_or(format!("{name} needs a list"))?.clone();
                let mut result = name == "all";
                for item in items {
                    scope.push((var.clone(), item));
                    let holds = eval_in(body, scope).and_then(truth);
                    scope.pop();
                    if holds? != result {
                        result = !result;
                        break;
                    }
                }
                Value::Bool(result)
            }
            Expr::Call(Some(target), name, args) => {
                let target = eval_in(target, scope)?;
                let args: Vec<Value> = args.iter().map(|a| eval_in(a, scope)).collect::<Result<_, _>>()?;
                match (name.as_str(), args.as_slice()) {
                    ("size", []) => size(&target)?,
                    ("startsWith", [a]) => Value::Bool(text(&target)?.starts_with(text(a)?)),
                    ("endsWith", [a]) => Value::Bool(text(&target)?.ends_with(text(a)?)),
                    ("contains", [a]) => Value::Bool(text(&target)?.contains(text(a)?)),
                    ("lowerAscii", []) => Value::String(text(&target)?.to_ascii_lowercase()),
                    _ => return Err(format!("unknown method {name}")),
                }
            }
            Expr::Call(None, name, _) => return Err(format!("unknown function {name}")),
        })
    }

    fn size(value: &Value) -> Result<Value, String> {
        Ok(Value::from(match value {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            other => return Err(format!("size of {other}")),
        }))
    }

    /// Evaluates `expr` with `self` (and `oldSelf` on an update).
    pub fn eval(expr: &Expr, this: &Value, old: Option<&Value>) -> Result<Value, String> {
        let mut scope = vec![("self".to_string(), this.clone())];
        if let Some(old) = old {
            scope.push(("oldSelf".to_string(), old.clone()));
        }
        eval_in(expr, &mut scope)
    }

    #[test]
    fn the_evaluator_follows_cel() {
        let eval_text = |text: &str, this: Value| eval(&parse(text).unwrap(), &this, None);
        let this = serde_json::json!({"a": "x@y.z", "list": ["p", "q"], "n": 3});
        assert_eq!(eval_text("self.a.endsWith('@y.z') && size(self.list) == 2", this.clone()), Ok(Value::Bool(true)));
        assert_eq!(eval_text("self.list.all(i, i in ['p', 'q']) || false", this.clone()), Ok(Value::Bool(true)));
        assert_eq!(eval_text("self.list.exists(i, i == 'r')", this.clone()), Ok(Value::Bool(false)));
        assert_eq!(eval_text("!has(self.b) && self.n + 1 >= 4", this.clone()), Ok(Value::Bool(true)));
        assert_eq!(
            eval_text("self.a.lowerAscii() == 'x@y.z'", serde_json::json!({"a": "X@Y.z"})),
            Ok(Value::Bool(true))
        );
        assert!(eval_text("self.b == 1", this).is_err(), "a missing field is an error");
        assert!(parse("self.a ==").is_err() && parse("self.a)").is_err() && parse("'open").is_err());
    }
}
