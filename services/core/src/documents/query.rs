//! Queries of the document store: equality and range filters, one order field (ties broken by
//! the document's path), a page size and a cursor.
//!
//! The semantics are Firestore's, and the memory store keeps them: a document lacking a
//! filtered or ordered field does not match; a range filter matches values of the filter
//! value's type only. Firestore needs a composite index for an equality filter on one field
//! combined with an order on another; ARCHITECTURE.md lists the ones the repositories use.

use serde_json::Value;

use super::{Document, DocumentError, compare_values};

/// Largest page a query may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Where a query looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's collection: everything a request of that tenant may see.
    Tenant(String),
    /// The collection of every tenant (a collection-group query), for maintenance jobs that
    /// run across tenants; never for a request.
    AllTenants,
}

/// A comparison of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One condition on a top-level field.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The field.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The value it is compared with.
    pub value: Value,
}

impl Filter {
    /// `field == value`.
    pub fn eq(field: &str, value: impl Into<Value>) -> Self {
        Self { field: field.to_owned(), op: Op::Eq, value: value.into() }
    }

    /// `field <op> value`.
    pub fn new(field: &str, op: Op, value: impl Into<Value>) -> Self {
        Self { field: field.to_owned(), op, value: value.into() }
    }

    /// Whether `document` matches.
    pub(crate) fn matches(&self, document: &Document) -> bool {
        let Some(value) = document.fields.get(&self.field) else { return false };
        let same_type = std::mem::discriminant(value) == std::mem::discriminant(&self.value);
        let order = compare_values(value, &self.value);
        match self.op {
            Op::Eq => order.is_eq() && same_type,
            Op::Lt => same_type && order.is_lt(),
            Op::Le => same_type && order.is_le(),
            Op::Gt => same_type && order.is_gt(),
            Op::Ge => same_type && order.is_ge(),
        }
    }
}

/// The direction of the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// Where the previous page ended: the last document's order value and its tenant and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The last document's value of the order field (`Null` when there is no order field).
    pub value: Value,
    /// The last document's tenant.
    pub tenant: String,
    /// The last document's id.
    pub id: String,
}

impl Cursor {
    /// The cursor just after `document`, for a query ordered by `order_field`.
    pub fn after(document: &Document, order_field: Option<&str>) -> Self {
        let value = order_field.and_then(|field| document.fields.get(field)).cloned().unwrap_or(Value::Null);
        Self { value, tenant: document.key.tenant().to_owned(), id: document.key.id().to_owned() }
    }
}

/// A query of one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Whose documents.
    pub scope: Scope,
    /// Which collection.
    pub collection: &'static str,
    /// Conditions, all of which must hold.
    pub filters: Vec<Filter>,
    /// The field to order by, and the direction (ties, and queries without an order field,
    /// go by tenant and id in the same direction).
    pub order_by: Option<(String, Direction)>,
    /// The page size: 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
    /// Continue after this document of the previous page.
    pub after: Option<Cursor>,
}

impl Query {
    /// All of `tenant`'s documents of `collection`, by id, `limit` at a time.
    pub fn new(tenant: &str, collection: &'static str, limit: usize) -> Self {
        Self {
            scope: Scope::Tenant(tenant.to_owned()),
            collection,
            filters: Vec::new(),
            order_by: None,
            limit,
            after: None,
        }
    }

    /// The documents of `collection` of every tenant, `limit` at a time (maintenance jobs only).
    pub fn all_tenants(collection: &'static str, limit: usize) -> Self {
        Self { scope: Scope::AllTenants, ..Self::new("", collection, limit) }
    }

    /// Adds a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Orders by `field`.
    pub fn order_by(mut self, field: &str, direction: Direction) -> Self {
        self.order_by = Some((field.to_owned(), direction));
        self
    }

    /// Continues after `cursor`.
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }

    /// The direction of the order (ascending without an order field).
    pub fn direction(&self) -> Direction {
        self.order_by.as_ref().map_or(Direction::Ascending, |(_, direction)| *direction)
    }

    /// Checks the limit and the cursor.
    pub(crate) fn check(&self) -> Result<(), DocumentError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(DocumentError::InvalidQuery(format!("the page size must be 1 to {MAX_PAGE_SIZE}")));
        }
        if let Scope::Tenant(tenant) = &self.scope {
            super::check_segment("tenant", tenant)?;
        }
        if let (Some(cursor), Scope::Tenant(tenant)) = (&self.after, &self.scope)
            && &cursor.tenant != tenant
        {
            return Err(DocumentError::InvalidQuery("the cursor is of another tenant".into()));
        }
        Ok(())
    }

    /// Orders two documents the way this query does.
    pub(crate) fn compare(&self, a: &Document, b: &Document) -> std::cmp::Ordering {
        let by_value = match &self.order_by {
            Some((field, _)) => {
                compare_values(a.fields.get(field).unwrap_or(&Value::Null), b.fields.get(field).unwrap_or(&Value::Null))
            }
            None => std::cmp::Ordering::Equal,
        };
        let order = by_value.then_with(|| a.key.tenant().cmp(b.key.tenant())).then_with(|| a.key.id().cmp(b.key.id()));
        match self.direction() {
            Direction::Ascending => order,
            Direction::Descending => order.reverse(),
        }
    }

    /// Whether `document` comes after the cursor in this query's order.
    pub(crate) fn is_after_cursor(&self, document: &Document) -> bool {
        let Some(cursor) = &self.after else { return true };
        let value = match &self.order_by {
            Some((field, _)) => document.fields.get(field).unwrap_or(&Value::Null),
            None => &Value::Null,
        };
        let order = compare_values(value, &cursor.value)
            .then_with(|| document.key.tenant().cmp(&cursor.tenant))
            .then_with(|| document.key.id().cmp(&cursor.id));
        match self.direction() {
            Direction::Ascending => order.is_gt(),
            Direction::Descending => order.is_lt(),
        }
    }

    /// Whether `document` is of the query's scope and collection and matches every filter
    /// and the order field.
    pub(crate) fn matches(&self, document: &Document) -> bool {
        let in_scope = match &self.scope {
            Scope::Tenant(tenant) => document.key.tenant() == tenant,
            Scope::AllTenants => true,
        };
        in_scope
            && document.key.collection() == self.collection
            && self.order_by.as_ref().is_none_or(|(field, _)| document.fields.contains_key(field))
            && self.filters.iter().all(|filter| filter.matches(document))
    }
}

/// One page of a query's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The documents, in the query's order.
    pub documents: Vec<Document>,
    /// Where the next page starts; `None` when this is the last one.
    pub next: Option<Cursor>,
}

impl Page {
    /// Builds a page from up to `limit + 1` matches in order: the extra one only tells that
    /// there is a next page.
    pub(crate) fn from_matches(query: &Query, mut documents: Vec<Document>) -> Self {
        let more = documents.len() > query.limit;
        documents.truncate(query.limit);
        let order_field = query.order_by.as_ref().map(|(field, _)| field.as_str());
        let next = if more { documents.last().map(|last| Cursor::after(last, order_field)) } else { None };
        Self { documents, next }
    }
}
