//! [`FirestoreDocuments`]: the document store on Firestore (or its emulator), through the
//! `firestore` crate's authenticated gRPC client.
//!
//! Only the part of the API the mesh needs, which is also the part the emulator implements:
//! writes through `Commit` (one atomic request; preconditions `exists` and `update_time`),
//! reads through `BatchGetDocuments` and `RunQuery`. A document's [`Version`] is its
//! `update_time`.
//!
//! A document `tenants/<tenant>/<collection>/<id>` lives at
//! `projects/<project>/databases/<database>/documents/tenants/<tenant>/<collection>/<id>`;
//! a tenant's query runs under `.../documents/tenants/<tenant>`, a query of every tenant is a
//! collection-group query under `.../documents`.

use std::collections::HashMap;
use std::path::PathBuf;

use firestore::gcloud_sdk::google::firestore::v1 as fs;
use firestore::{FirestoreDb, FirestoreDbOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio_stream::StreamExt as _;

use super::query::Direction;
use super::{
    BoxFuture, Committed, DocKey, Document, DocumentError, DocumentStore, Expect, Fields, Op, Page, Precondition,
    Query, Scope, Version, Write, check_distinct,
};

/// Section `[documents.firestore]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirestoreSettings {
    /// The Google Cloud project. Key `documents.firestore.project_id`.
    pub project_id: String,
    /// The database. Key `documents.firestore.database_id`, default `(default)`.
    pub database_id: Option<String>,
    /// `host:port` of a Firestore emulator to use instead of Google's service; no
    /// credentials are sent. Key `documents.firestore.emulator_host`.
    pub emulator_host: Option<String>,
    /// A service account key file; unset: the application default credentials. Key
    /// `documents.firestore.credentials_file`.
    pub credentials_file: Option<PathBuf>,
    /// The longest one call may take; a slower call fails as unavailable. Key
    /// `documents.firestore.call_timeout`, default `2s`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: std::time::Duration,
}

impl Default for FirestoreSettings {
    fn default() -> Self {
        Self {
            project_id: String::new(),
            database_id: None,
            emulator_host: None,
            credentials_file: None,
            call_timeout: std::time::Duration::from_secs(2),
        }
    }
}

/// Documents in Firestore; see the module docs.
#[derive(Clone)]
pub struct FirestoreDocuments {
    db: FirestoreDb,
    /// `projects/<project>/databases/<database>`.
    database: String,
    /// Where its documents are.
    paths: Paths,
    /// The longest one call may take.
    timeout: std::time::Duration,
}

impl std::fmt::Debug for FirestoreDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreDocuments").field("database", &self.database).finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> DocumentError {
    DocumentError::Unavailable(error.to_string())
}

impl FirestoreDocuments {
    /// Connects to the database `settings` name (the emulator's, when it names one).
    pub async fn connect(settings: &FirestoreSettings) -> Result<Self, DocumentError> {
        let mut options = FirestoreDbOptions::new(settings.project_id.clone());
        if let Some(database) = &settings.database_id {
            options.database_id = database.clone();
        }
        let db = match (&settings.emulator_host, &settings.credentials_file) {
            (Some(host), _) => {
                options.firebase_api_url = Some(format!("http://{host}"));
                // the emulator takes any token: send none
                let anonymous =
                    firestore::gcloud_sdk::google_cloud_auth::credentials::anonymous::Builder::new().build();
                FirestoreDb::with_options_auth(options.clone(), anonymous).await
            }
            (None, Some(file)) => {
                FirestoreDb::with_options_service_account_key_file(options.clone(), file.clone()).await
            }
            (None, None) => FirestoreDb::with_options(options.clone()).await,
        }
        .map_err(unavailable)?;
        let database = format!("projects/{}/databases/{}", options.google_project_id, options.database_id);
        let root = format!("{database}/documents");
        Ok(Self { db, database, paths: Paths { root }, timeout: settings.call_timeout })
    }
}

/// The names Firestore knows documents and queries by, under one database's documents.
#[derive(Debug, Clone)]
struct Paths {
    /// `projects/<project>/databases/<database>/documents`.
    root: String,
}

impl Paths {
    fn name(&self, key: &DocKey) -> String {
        format!("{}/{}", self.root, key.path())
    }

    /// The key of a document `name` of `collection`, if it is one of ours.
    fn key_of(&self, name: &str, collection: &'static str) -> Result<DocKey, DocumentError> {
        let corrupt = |reason: &str| DocumentError::Corrupt { key: name.to_owned(), reason: reason.to_owned() };
        let path = name
            .strip_prefix(&self.root)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| corrupt("outside the database"))?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["tenants", tenant, found, id] if *found == collection => DocKey::new(tenant, collection, id),
            _ => Err(corrupt("not a tenant document of the collection")),
        }
    }

    fn document(&self, found: fs::Document, collection: &'static str) -> Result<Document, DocumentError> {
        let key = self.key_of(&found.name, collection)?;
        let version = found
            .update_time
            .map(version_of)
            .ok_or_else(|| DocumentError::Corrupt { key: key.to_string(), reason: "no update time".into() })?;
        let fields = found.fields.into_iter().map(|(name, value)| (name, from_value(value))).collect();
        Ok(Document { key, fields, version })
    }

    fn write(&self, write: Write) -> fs::Write {
        let exists =
            |exists| Some(fs::Precondition { condition_type: Some(fs::precondition::ConditionType::Exists(exists)) });
        let precondition = |expect: Expect| match expect {
            Expect::Any => None,
            Expect::Exists => exists(true),
            Expect::Version(version) => Some(fs::Precondition {
                condition_type: Some(fs::precondition::ConditionType::UpdateTime(timestamp_of(version))),
            }),
        };
        let (operation, current_document) = match write {
            Write::Create { key, fields } => {
                (fs::write::Operation::Update(self.new_document(&key, fields)), exists(false))
            }
            Write::Put { key, fields, expect } => {
                (fs::write::Operation::Update(self.new_document(&key, fields)), precondition(expect))
            }
            Write::Delete { key, expect } => (fs::write::Operation::Delete(self.name(&key)), precondition(expect)),
        };
        fs::Write { operation: Some(operation), current_document, ..Default::default() }
    }

    fn new_document(&self, key: &DocKey, fields: Fields) -> fs::Document {
        fs::Document {
            name: self.name(key),
            fields: fields.into_iter().map(|(name, value)| (name, to_value(value))).collect(),
            ..Default::default()
        }
    }

    fn structured_query(&self, query: &Query) -> (String, fs::StructuredQuery) {
        use fs::structured_query as sq;
        let (parent, all_descendants) = match &query.scope {
            Scope::Tenant(tenant) => (format!("{}/tenants/{tenant}", self.root), false),
            Scope::AllTenants => (self.root.clone(), true),
        };
        let field = |path: &str| Some(sq::FieldReference { field_path: path.to_owned() });
        let filters: Vec<sq::Filter> = query
            .filters
            .iter()
            .map(|filter| {
                let op = match filter.op {
                    Op::Eq => sq::field_filter::Operator::Equal,
                    Op::Lt => sq::field_filter::Operator::LessThan,
                    Op::Le => sq::field_filter::Operator::LessThanOrEqual,
                    Op::Gt => sq::field_filter::Operator::GreaterThan,
                    Op::Ge => sq::field_filter::Operator::GreaterThanOrEqual,
                };
                sq::Filter {
                    filter_type: Some(sq::filter::FilterType::FieldFilter(sq::FieldFilter {
                        field: field(&filter.field),
                        op: op as i32,
                        value: Some(to_value(filter.value.clone())),
                    })),
                }
            })
            .collect();
        let r#where = match filters.len() {
            0 => None,
            1 => filters.into_iter().next(),
            _ => Some(sq::Filter {
                filter_type: Some(sq::filter::FilterType::CompositeFilter(sq::CompositeFilter {
                    op: sq::composite_filter::Operator::And as i32,
                    filters,
                })),
            }),
        };
        let direction = match query.direction() {
            Direction::Ascending => sq::Direction::Ascending,
            Direction::Descending => sq::Direction::Descending,
        } as i32;
        let mut order_by = Vec::new();
        if let Some((path, _)) = &query.order_by {
            order_by.push(sq::Order { field: field(path), direction });
        }
        order_by.push(sq::Order { field: field("__name__"), direction });
        let start_at = query.after.as_ref().map(|cursor| {
            let name = format!("{}/tenants/{}/{}/{}", self.root, cursor.tenant, query.collection, cursor.id);
            let reference = fs::Value { value_type: Some(fs::value::ValueType::ReferenceValue(name)) };
            let mut values = Vec::new();
            if query.order_by.is_some() {
                values.push(to_value(cursor.value.clone()));
            }
            values.push(reference);
            fs::Cursor { values, before: false }
        });
        let structured = fs::StructuredQuery {
            from: vec![sq::CollectionSelector { collection_id: query.collection.to_owned(), all_descendants }],
            r#where,
            order_by,
            start_at,
            limit: Some(i32::try_from(query.limit + 1).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        (parent, structured)
    }
}

/// What a failed commit's status says about its preconditions.
fn commit_error(status: &tonic::Status) -> DocumentError {
    let kind = match status.code() {
        tonic::Code::AlreadyExists => Precondition::AlreadyExists,
        tonic::Code::NotFound => Precondition::Missing,
        tonic::Code::FailedPrecondition => Precondition::Changed,
        _ => return read_error(status),
    };
    DocumentError::Precondition { key: status.message().to_owned(), kind }
}

fn read_error(status: &tonic::Status) -> DocumentError {
    match status.code() {
        // a request this code built and Firestore refuses (a missing composite index is
        // FAILED_PRECONDITION): retrying cannot help
        code @ (tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::PermissionDenied
        | tonic::Code::Unimplemented) => {
            tracing::error!(?code, message = status.message(), "firestore refused a request");
            DocumentError::Rejected(format!("firestore answered {code:?}: {}", status.message()))
        }
        code => DocumentError::Unavailable(format!("firestore answered {code:?}: {}", status.message())),
    }
}

impl FirestoreDocuments {
    /// Runs one call within the call timeout.
    async fn timed<T>(&self, call: impl Future<Output = Result<T, DocumentError>>) -> Result<T, DocumentError> {
        tokio::time::timeout(self.timeout, call).await.unwrap_or_else(|_| {
            Err(DocumentError::Unavailable(format!(
                "no answer from firestore within {}",
                humantime::format_duration(self.timeout)
            )))
        })
    }
}

impl DocumentStore for FirestoreDocuments {
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
        Box::pin(self.timed(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<String> = keys.iter().map(|key| self.paths.name(key)).collect();
            let request = fs::BatchGetDocumentsRequest {
                database: self.database.clone(),
                documents: names.clone(),
                ..Default::default()
            };
            let mut stream =
                self.db.client().get().batch_get_documents(request).await.map_err(|s| read_error(&s))?.into_inner();
            let mut found: HashMap<String, fs::Document> = HashMap::new();
            while let Some(response) = stream.next().await {
                let response = response.map_err(|s| read_error(&s))?;
                if let Some(fs::batch_get_documents_response::Result::Found(document)) = response.result {
                    found.insert(document.name.clone(), document);
                }
            }
            keys.iter()
                .zip(names)
                .map(|(key, name)| {
                    found.remove(&name).map(|document| self.paths.document(document, key.collection())).transpose()
                })
                .collect()
        }))
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>> {
        Box::pin(self.timed(async move {
            check_distinct(&writes)?;
            if writes.is_empty() {
                return Err(DocumentError::InvalidCommit("a commit needs at least one write".into()));
            }
            let count = writes.len();
            let request = fs::CommitRequest {
                database: self.database.clone(),
                writes: writes.into_iter().map(|write| self.paths.write(write)).collect(),
                ..Default::default()
            };
            let response = self.db.client().get().commit(request).await.map_err(|s| commit_error(&s))?.into_inner();
            let at =
                response.commit_time.map(version_of).ok_or_else(|| unavailable("a commit without a commit time"))?;
            let mut versions: Vec<Version> =
                response.write_results.into_iter().map(|result| result.update_time.map_or(at, version_of)).collect();
            versions.resize(count, at);
            Ok(Committed { versions, at })
        }))
    }

    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>> {
        Box::pin(self.timed(async move {
            query.check()?;
            let (parent, structured) = self.paths.structured_query(query);
            let request = fs::RunQueryRequest {
                parent,
                query_type: Some(fs::run_query_request::QueryType::StructuredQuery(structured)),
                ..Default::default()
            };
            let mut stream = self.db.client().get().run_query(request).await.map_err(|s| read_error(&s))?.into_inner();
            let mut documents = Vec::new();
            while let Some(response) = stream.next().await {
                if let Some(document) = response.map_err(|s| read_error(&s))?.document {
                    documents.push(self.paths.document(document, query.collection)?);
                }
            }
            Ok(Page::from_matches(query, documents))
        }))
    }
}

fn version_of(timestamp: prost_types::Timestamp) -> Version {
    Version { seconds: timestamp.seconds, nanos: timestamp.nanos }
}

fn timestamp_of(version: Version) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: version.seconds, nanos: version.nanos }
}

fn to_value(json: Json) -> fs::Value {
    use fs::value::ValueType;
    let value = match json {
        Json::Null => ValueType::NullValue(0),
        Json::Bool(b) => ValueType::BooleanValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ValueType::IntegerValue(i),
            None => ValueType::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => ValueType::StringValue(s),
        Json::Array(values) => {
            ValueType::ArrayValue(fs::ArrayValue { values: values.into_iter().map(to_value).collect() })
        }
        Json::Object(fields) => ValueType::MapValue(fs::MapValue {
            fields: fields.into_iter().map(|(name, value)| (name, to_value(value))).collect(),
        }),
    };
    fs::Value { value_type: Some(value) }
}

fn from_value(value: fs::Value) -> Json {
    use fs::value::ValueType;
    match value.value_type {
        None | Some(ValueType::NullValue(_)) => Json::Null,
        Some(ValueType::BooleanValue(b)) => Json::Bool(b),
        Some(ValueType::IntegerValue(i)) => Json::from(i),
        Some(ValueType::DoubleValue(d)) => serde_json::Number::from_f64(d).map_or(Json::Null, Json::Number),
        Some(ValueType::StringValue(s) | ValueType::ReferenceValue(s)) => Json::String(s),
        Some(ValueType::TimestampValue(t)) => Json::String(format!("{}.{:09}", t.seconds, t.nanos)),
        Some(ValueType::BytesValue(bytes)) => {
            use base64::Engine as _;
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Some(ValueType::ArrayValue(array)) => Json::Array(array.values.into_iter().map(from_value).collect()),
        Some(ValueType::MapValue(map)) => {
            Json::Object(map.fields.into_iter().map(|(name, value)| (name, from_value(value))).collect())
        }
        Some(other) => Json::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::documents::query::{Cursor, Filter};

    const ROOT: &str = "projects/p/databases/(default)/documents";

    fn paths() -> Paths {
        Paths { root: ROOT.into() }
    }

    fn condition(write: &fs::Write) -> Option<fs::precondition::ConditionType> {
        write.current_document.and_then(|precondition| precondition.condition_type)
    }

    #[test]
    fn writes_carry_their_preconditions() {
        use fs::precondition::ConditionType;
        let key = DocKey::new("acme", "files", "f1").unwrap();
        let fields = json!({"n": 1}).as_object().unwrap().clone();
        let version = Version { seconds: 1_700_000_000, nanos: 123_000 };

        let create = paths().write(Write::Create { key: key.clone(), fields: fields.clone() });
        assert_eq!(condition(&create), Some(ConditionType::Exists(false)));
        let Some(fs::write::Operation::Update(document)) = create.operation else { panic!("an update") };
        assert_eq!(document.name, format!("{ROOT}/tenants/acme/files/f1"));
        assert!(create.update_mask.is_none(), "a put replaces the whole document");

        let put = paths().write(Write::Put { key: key.clone(), fields, expect: Expect::Version(version) });
        assert_eq!(condition(&put), Some(ConditionType::UpdateTime(timestamp_of(version))));
        let delete = paths().write(Write::Delete { key: key.clone(), expect: Expect::Exists });
        assert_eq!(condition(&delete), Some(ConditionType::Exists(true)));
        assert_eq!(delete.operation, Some(fs::write::Operation::Delete(format!("{ROOT}/tenants/acme/files/f1"))));
        assert_eq!(condition(&paths().write(Write::Delete { key, expect: Expect::Any })), None);
    }

    #[test]
    fn a_tenant_query_runs_under_the_tenant_and_continues_after_its_cursor() {
        use fs::structured_query as sq;
        let cursor = Cursor { value: json!(42), tenant: "acme".into(), id: "f9".into() };
        let query = Query::new("acme", "files", 10)
            .filter(Filter::eq("status", "READY"))
            .filter(Filter::new("size", crate::documents::Op::Lt, 100))
            .order_by("created_at", Direction::Descending)
            .after(Some(cursor));
        let (parent, structured) = paths().structured_query(&query);
        assert_eq!(parent, format!("{ROOT}/tenants/acme"));
        assert_eq!(
            structured.from,
            vec![sq::CollectionSelector { collection_id: "files".into(), all_descendants: false }]
        );
        assert_eq!(structured.limit, Some(11), "one more than the page tells whether there is a next page");
        let fields: Vec<(String, i32)> = structured
            .order_by
            .iter()
            .map(|order| (order.field.clone().unwrap().field_path, order.direction))
            .collect();
        let descending = sq::Direction::Descending as i32;
        assert_eq!(fields, [("created_at".to_owned(), descending), ("__name__".to_owned(), descending)]);
        let start = structured.start_at.expect("a cursor");
        assert!(!start.before, "the page starts after the cursor");
        assert_eq!(
            start.values,
            vec![
                to_value(json!(42)),
                fs::Value {
                    value_type: Some(fs::value::ValueType::ReferenceValue(format!("{ROOT}/tenants/acme/files/f9")))
                },
            ]
        );
        let Some(sq::filter::FilterType::CompositeFilter(and)) =
            structured.r#where.and_then(|filter| filter.filter_type)
        else {
            panic!("two filters are one AND")
        };
        assert_eq!((and.op, and.filters.len()), (sq::composite_filter::Operator::And as i32, 2));
    }

    #[test]
    fn an_all_tenant_query_is_a_collection_group_query_under_the_root() {
        let (parent, structured) = paths().structured_query(&Query::all_tenants("files", 5));
        assert_eq!(parent, ROOT);
        assert!(structured.from[0].all_descendants);
        assert_eq!(structured.order_by.len(), 1, "by name only");
        assert!(structured.r#where.is_none() && structured.start_at.is_none());
    }

    #[test]
    fn only_our_documents_read_back_and_values_map_both_ways() {
        let name = format!("{ROOT}/tenants/acme/files/f1");
        assert_eq!(paths().key_of(&name, "files").unwrap(), DocKey::new("acme", "files", "f1").unwrap());
        assert!(paths().key_of(&name, "users").is_err(), "another collection");
        assert!(paths().key_of("projects/q/databases/(default)/documents/tenants/acme/files/f1", "files").is_err());
        assert!(paths().key_of(&format!("{ROOT}/files/f1"), "files").is_err());
        let value = json!({"a": [1, "b", null, true, 0.5, {"c": -7}]});
        assert_eq!(from_value(to_value(value.clone())), value);
    }
}
