//! The CustomResourceDefinitions committed in `crds/` are the ones the Rust types generate.

use std::path::Path;

use kube::CustomResourceExt;
use tern_operator::crd::{Domain, Mailbox, crd_manifests};

#[test]
fn committed_crds_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for (name, generated) in crd_manifests() {
        let path = dir.join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale or missing: run `cargo xtask codegen` and commit crds/",
            path.display()
        );
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
    assert_eq!(columns, ["Address", "Ready", "Usage", "Messages", "Age"]);
    assert!(version["subresources"]["status"].is_object());
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["mbx"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");

    let crd = serde_json::to_value(Domain::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Domain", "Ready", "Age"]);
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
