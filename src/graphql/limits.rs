//! What a GraphQL document must stay within before anything runs: the depth and complexity
//! limits async-graphql checks (`graphql.max_depth`, `graphql.max_complexity`), the count of
//! aliased fields it has no limit for (`graphql.max_aliases`, counted here from the parsed
//! document), and on the gateway, queries only: a mutation or subscription there (and
//! introspection, unless `graphql.gateway_introspection`) is refused as `forbidden` before
//! validation, with what to do instead.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, ObjectType, SchemaBuilder, ServerError, ServerResult, SubscriptionType, Variables};

use crate::config::GraphqlConfig;
use crate::http::ErrorCode;

/// The limits of `cfg` on a schema being built; `gateway`: queries only.
pub fn apply<Q, M, S>(builder: SchemaBuilder<Q, M, S>, cfg: &GraphqlConfig, gateway: bool) -> SchemaBuilder<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let introspection = !gateway || cfg.gateway_introspection;
    builder.limit_depth(cfg.max_depth).limit_complexity(cfg.max_complexity).extension(Limits {
        max_aliases: cfg.max_aliases,
        gateway,
        introspection,
    })
}

/// Makes one [`Checks`] per request.
struct Limits {
    /// `graphql.max_aliases`.
    max_aliases: usize,
    /// Whether this is the gateway's schema (queries only).
    gateway: bool,
    /// Whether `__schema` and `__type` are answered (async-graphql answers them with null
    /// when introspection is off; this says why instead).
    introspection: bool,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Checks { max_aliases: self.max_aliases, gateway: self.gateway, introspection: self.introspection })
    }
}

/// One request's checks.
struct Checks {
    /// `graphql.max_aliases`.
    max_aliases: usize,
    /// Whether this is the gateway's schema (queries only).
    gateway: bool,
    /// Whether introspection is answered.
    introspection: bool,
}

fn refusal(code: ErrorCode, message: String) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code.as_str());
    ext.set("status", code.status().as_u16());
    e.extensions = Some(ext);
    e
}

/// The aliased fields of a selection set, fragments' own counted where they are defined.
fn aliases(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => usize::from(f.node.alias.is_some()) + aliases(&f.node.selection_set.node),
            Selection::InlineFragment(f) => aliases(&f.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Whether a selection set asks for `__schema` or `__type` (`__typename` is no introspection).
fn introspects(set: &SelectionSet) -> bool {
    set.items.iter().any(|s| match &s.node {
        Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type") || introspects(&f.node.selection_set.node),
        Selection::InlineFragment(f) => introspects(&f.node.selection_set.node),
        Selection::FragmentSpread(_) => false,
    })
}

impl Checks {
    fn check(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let ops: Vec<(OperationType, &SelectionSet)> = match &doc.operations {
            DocumentOperations::Single(op) => vec![(op.node.ty, &op.node.selection_set.node)],
            DocumentOperations::Multiple(map) => map.values().map(|op| (op.node.ty, &op.node.selection_set.node)).collect(),
        };
        if self.gateway {
            if let Some((ty, _)) = ops.iter().find(|(ty, _)| *ty != OperationType::Query) {
                let what = if *ty == OperationType::Mutation { "mutations" } else { "subscriptions" };
                return Err(refusal(
                    ErrorCode::Forbidden,
                    format!("the gateway serves GraphQL queries only; {what} are served by /graphql on the admin socket"),
                ));
            }
        }
        if !self.introspection
            && (ops.iter().any(|(_, set)| introspects(set)) || doc.fragments.values().any(|f| introspects(&f.node.selection_set.node)))
        {
            return Err(refusal(
                ErrorCode::Forbidden,
                "introspection (__schema, __type) is off on the gateway; docs/graphql.md has the schema, or set graphql.gateway_introspection".to_string(),
            ));
        }
        let n = ops.iter().map(|(_, set)| aliases(set)).sum::<usize>()
            + doc.fragments.values().map(|f| aliases(&f.node.selection_set.node)).sum::<usize>();
        if n > self.max_aliases {
            return Err(refusal(
                ErrorCode::InvalidGraphql,
                format!("the document has {n} aliased fields; at most {} are allowed (graphql.max_aliases)", self.max_aliases),
            ));
        }
        Ok(())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Checks {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        self.check(&doc)?;
        Ok(doc)
    }
}
