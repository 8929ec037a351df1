use super::*;

fn cfg() -> GraphqlConfig {
    GraphqlConfig { max_depth: 3, max_complexity: 20, max_aliases: 2, gateway_introspection: false }
}

/// A schema without data: every document here is refused before a resolver would run.
fn gateway() -> GatewaySchema {
    gateway_builder(&cfg()).finish()
}

async fn codes(schema: &GatewaySchema, query: &str) -> Vec<(String, String)> {
    let resp = with_codes(schema.execute(query).await);
    resp.errors
        .iter()
        .map(|e| {
            let code = e.extensions.as_ref().and_then(|x| x.get("code")).map(|c| c.to_string()).unwrap_or_default();
            (code.trim_matches('"').to_string(), e.message.clone())
        })
        .collect()
}

#[tokio::test]
async fn documents_over_a_limit_are_refused_with_a_code() {
    let s = gateway();
    let three = r#"{ a: addon(id: "x") { id } b: addon(id: "y") { id } c: addon(id: "z") { id } }"#;
    let errs = codes(&s, three).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "invalid_graphql");
    assert!(errs[0].1.contains("3 aliased fields") && errs[0].1.contains("graphql.max_aliases"), "{errs:?}");
    // Aliases inside fragments count where the fragment is defined.
    let in_fragment = r#"{ a: addon(id: "x") { ...F } } fragment F on Addon { b: id c: name }"#;
    assert_eq!(codes(&s, in_fragment).await[0].0, "invalid_graphql");

    let deep = r#"{ addon(id: "x") { widgets { render { html } } } }"#;
    let errs = codes(&s, deep).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "invalid_graphql", "{errs:?}");

    let wide = r#"{ addon(id: "x") { id name version description author category installed phase config
        apis { name description inputSchema outputSchema } widgets { id name addonId category description configSchema } } }"#;
    let errs = codes(&s, wide).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "invalid_graphql", "over max_complexity (20): {errs:?}");

    let errs = codes(&s, "{ addon(id: ").await;
    assert_eq!(errs[0].0, "invalid_graphql", "a syntax error: {errs:?}");
    let errs = codes(&s, "{ nope }").await;
    assert!(errs[0].0 == "invalid_graphql" && errs[0].1.contains("nope"), "{errs:?}");
}

#[tokio::test]
async fn the_gateway_refuses_mutations_and_subscriptions_before_validation() {
    let s = gateway();
    for (doc, what) in [(r#"mutation { installAddon(id: "x") { id } }"#, "mutations"), ("subscription { events { id } }", "subscriptions")]
    {
        let errs = codes(&s, doc).await;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "forbidden");
        assert!(errs[0].1.contains(what) && errs[0].1.contains("admin socket"), "{errs:?}");
    }
    // Introspection is off on the gateway unless configured.
    let introspect = "{ __schema { queryType { name } } }";
    let errs = codes(&s, introspect).await;
    assert!(errs[0].0 == "forbidden" && errs[0].1.contains("graphql.gateway_introspection"), "{errs:?}");
    let errs = codes(&s, "{ ...F } fragment F on Query { __type(name: \"Addon\") { name } }").await;
    assert_eq!(errs[0].0, "forbidden", "{errs:?}");
    // `__typename` is no introspection.
    assert!(s.execute("{ __typename }").await.errors.is_empty());
    let open = gateway_builder(&GraphqlConfig { gateway_introspection: true, ..cfg() }).finish();
    let resp = open.execute(introspect).await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
}

#[test]
fn a_gateway_scope_names_only_its_grants_instance() {
    let dev = Scope::Addon("pay--dev".into());
    assert_eq!(dev.instance("pay", "id").unwrap(), "pay--dev");
    assert_eq!(dev.instance("pay--dev", "id").unwrap(), "pay--dev");
    for other in ["pay--prod", "shop", "shop--dev", ""] {
        let e = dev.instance(other, "addonId").unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::Forbidden, Some("addonId")), "{other}");
    }
    let prod = Scope::Addon("pay".into());
    assert_eq!(prod.instance("pay--prod", "id").unwrap(), "pay");
    assert!(prod.instance("pay--dev", "id").is_err());
    assert_eq!(Scope::All.instance("anything", "id").unwrap(), "anything");
    assert!(dev.sees("pay--dev") && !dev.sees("pay") && Scope::All.sees("pay"));
}

#[test]
fn bodies_are_checked_like_every_json_body() {
    let r = request(br#"{"query": "{ x }", "variables": {"a": 1}, "operationName": "Q"}"#).unwrap();
    assert_eq!((r.query.as_str(), r.operation_name.as_deref()), ("{ x }", Some("Q")));
    assert!(request(br#"{"query": "{ x }", "variables": null}"#).is_ok());
    let e = request(br#"{"query": "{ x }", "variables": [1]}"#).unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidJson, Some("variables")));
    let e = request(br#"{"variables": {}}"#).unwrap_err();
    assert!(e.message.contains("query"), "{}", e.message);
    let e = request(br#"{"query": "{ x }", "querry": 1}"#).unwrap_err();
    assert!(e.message.contains("querry"), "{}", e.message);
}
