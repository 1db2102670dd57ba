//! The `FirestoreEmulator` harness, and the recipe for talking to it with the `firestore` crate.
//!
//! The client is pointed at the emulator without the process-global `FIRESTORE_EMULATOR_HOST` (tests run in
//! parallel in one process): `firebase_api_url` names the emulator, and anonymous credentials keep the client from
//! looking for Google credentials. Reads and writes go through the crate's raw gRPC client (`db.client().get()`):
//! the emulator implements `Commit`, `BatchGetDocuments` and `RunQuery`, but none of the single-document RPCs that
//! the fluent API's get, insert, update and delete use. The last test pins down where the emulator departs from
//! Firestore, so that an upgrade that changes it is noticed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use firestore::gcloud_sdk::google::firestore::v1::batch_get_documents_response::Result as BatchGetResult;
use firestore::gcloud_sdk::google::firestore::v1::precondition::ConditionType;
use firestore::gcloud_sdk::google::firestore::v1::structured_query::{
    CollectionSelector, Direction, FieldFilter, FieldReference, Filter, Order, field_filter, filter::FilterType,
};
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{
    ArrayValue, BatchGetDocumentsRequest, BeginTransactionRequest, CommitRequest, CommitResponse, Cursor, Document,
    MapValue, Precondition, RollbackRequest, RunQueryRequest, StructuredQuery, Value, Write, run_query_request,
    write::Operation,
};
use firestore::gcloud_sdk::google_cloud_auth::credentials::anonymous;
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::{Code, Status};
use firestore::{FirestoreDb, FirestoreDbOptions, FirestoreTimestamp, FirestoreWritePrecondition};
use mesh_testkit::{FirestoreEmulator, eventually};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_stream::StreamExt as _;

#[tokio::test]
async fn an_emulator_serves_until_stopped_and_comes_back_empty_on_the_same_port() -> anyhow::Result<()> {
    let (first, second) = tokio::join!(FirestoreEmulator::start(), FirestoreEmulator::start());
    let (mut emulator, other) = (first?, second?);
    assert_ne!(emulator.port(), other.port());
    assert_ne!(emulator.project_id(), other.project_id());
    assert_eq!(emulator.host(), format!("127.0.0.1:{}", emulator.port()));
    let db = connect(&emulator).await?;
    let name = file_name(&db, "t1", "a");
    commit(&db, vec![set(&name, &[("owner", string("alice"))], None)]).await?;

    let port = emulator.port();
    let addr: SocketAddr = emulator.host().parse()?;
    emulator.stop().await;
    assert!(!emulator.is_running());
    let error = commit(&db, vec![delete(&name, None)]).await.expect_err("a stopped emulator must not commit");
    assert!(matches!(error.code(), Code::Unavailable | Code::Cancelled), "{error:?}");
    wait_until_refused(addr).await?;

    emulator.restart().await.context("restart")?;
    assert!(emulator.is_running());
    assert_eq!(emulator.port(), port);
    // the client made before the outage reconnects by itself; the data is gone
    let (db, names) = (&db, [name.as_str()]);
    let results = eventually("the old client reaches the restarted emulator", Duration::from_secs(10), || async move {
        batch_get(db, &names).await.ok()
    })
    .await;
    assert_eq!(results, [BatchGetResult::Missing(name.clone())]);

    let dir = emulator.dir().to_path_buf();
    drop(emulator);
    wait_until_refused(addr).await?;
    assert!(!dir.exists(), "the emulator's directory must be removed");
    Ok(())
}

#[tokio::test]
async fn one_commit_applies_several_writes_with_preconditions_and_reports_each_update_time() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = connect(&emulator).await?;
    let [a, b, c] = ["a", "b", "c"].map(|id| file_name(&db, "t1", id));

    let created = commit(
        &db,
        vec![
            set(&a, &[("owner", string("alice")), ("size", integer(3))], Some(ConditionType::Exists(false))),
            set(&b, &[("owner", string("bob")), ("size", integer(1))], Some(ConditionType::Exists(false))),
            set(&c, &[("owner", string("carol")), ("size", integer(2))], None),
        ],
    )
    .await?;
    let created_at = created.commit_time.context("a commit has a commit time")?;
    assert_eq!(created.write_results.len(), 3, "one result per write");
    assert!(created.write_results.iter().all(|result| result.update_time == Some(created_at)));

    let changed = commit(
        &db,
        vec![
            set(&a, &[("owner", string("alice")), ("size", integer(4))], Some(ConditionType::UpdateTime(created_at))),
            delete(&b, Some(ConditionType::Exists(true))),
        ],
    )
    .await?;
    assert_eq!(changed.write_results.len(), 2);
    let results = batch_get(&db, &[&a, &b]).await?;
    let updated = found(&results[0]).context("a must still exist")?;
    assert_eq!(updated.fields.get("size"), Some(&integer(4)));
    assert_eq!(updated.create_time, Some(created_at));
    assert_eq!(updated.update_time, changed.commit_time);
    assert_eq!(results[1], BatchGetResult::Missing(b.clone()));

    let error = commit(&db, vec![set(&a, &[], Some(ConditionType::Exists(false)))]).await.expect_err("a exists");
    assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");
    assert!(error.message().starts_with("entity already exists"), "{error:?}");
    let error = commit(&db, vec![set(&b, &[], Some(ConditionType::Exists(true)))]).await.expect_err("b is gone");
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    assert!(error.message().starts_with("no entity to update"), "{error:?}");
    let error = commit(&db, vec![delete(&b, Some(ConditionType::Exists(true)))]).await.expect_err("b is gone");
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    Ok(())
}

#[tokio::test]
async fn a_batch_get_answers_each_name_in_order_with_the_document_or_missing() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = connect(&emulator).await?;
    let [a, b, absent] = ["a", "b", "absent"].map(|id| file_name(&db, "t1", id));
    let other_tenant = file_name(&db, "t2", "a");
    let response =
        commit(&db, vec![set(&a, &[("owner", string("alice"))], None), set(&b, &[("owner", string("bob"))], None)])
            .await?;

    let results = batch_get(&db, &[&b, &absent, &a, &other_tenant]).await?;

    assert_eq!(results.len(), 4);
    let first = found(&results[0]).context("b exists")?;
    assert_eq!(first.name, b);
    assert_eq!(first.fields.get("owner"), Some(&string("bob")));
    assert_eq!(first.update_time, response.commit_time);
    assert_eq!(results[1], BatchGetResult::Missing(absent));
    assert_eq!(found(&results[2]).map(|document| document.name.as_str()), Some(a.as_str()));
    assert_eq!(results[3], BatchGetResult::Missing(other_tenant));
    Ok(())
}

#[tokio::test]
async fn a_query_filters_on_equality_orders_and_limits_within_its_parent_but_ignores_cursors() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = connect(&emulator).await?;
    let file = |tenant: &str, id: &str, owner: &str, size: i64| {
        set(&file_name(&db, tenant, id), &[("owner", string(owner)), ("size", integer(size))], None)
    };
    commit(
        &db,
        vec![
            file("t1", "f4", "alice", 4),
            file("t1", "f1", "alice", 1),
            file("t1", "f2", "bob", 2),
            file("t1", "f3", "alice", 3),
            file("t2", "f0", "alice", 0),
        ],
    )
    .await?;
    let parent = tenant_parent(&db, "t1");

    let all = run_query(&db, &parent, files_of("alice", Direction::Ascending, None)).await?;
    let first_two = run_query(&db, &parent, files_of("alice", Direction::Ascending, Some(2))).await?;
    let descending = run_query(&db, &parent, files_of("alice", Direction::Descending, None)).await?;

    assert_eq!(ids(&all), ["f1", "f3", "f4"]);
    assert_eq!(ids(&first_two), ["f1", "f3"]);
    assert_eq!(ids(&descending), ["f4", "f3", "f1"]);
    assert_eq!(all[0].fields.get("size"), Some(&integer(1)));

    // a `start_after` cursor (size 1, then name f1) is ignored: Firestore would answer f3, f4
    let mut after_first = files_of("alice", Direction::Ascending, None);
    let values = vec![integer(1), reference(&file_name(&db, "t1", "f1"))];
    after_first.start_at = Some(Cursor { values, before: false });
    assert_eq!(ids(&run_query(&db, &parent, after_first).await?), ["f1", "f3", "f4"]);
    Ok(())
}

#[tokio::test]
async fn a_transaction_commits_its_writes_with_its_id() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = connect(&emulator).await?;
    let database = db.get_database_path().clone();
    let name = file_name(&db, "t1", "raw");

    let begun = db
        .client()
        .get()
        .begin_transaction(BeginTransactionRequest { database: database.clone(), options: None, request_options: None })
        .await?
        .into_inner();
    assert!(!begun.transaction.is_empty());
    let request = CommitRequest {
        database: database.clone(),
        writes: vec![set(&name, &[("owner", string("alice"))], Some(ConditionType::Exists(false)))],
        transaction: begun.transaction,
        request_options: None,
    };
    let committed = db.client().get().commit(request).await?.into_inner();
    assert_eq!(committed.write_results.len(), 1);
    assert!(found(&batch_get(&db, &[&name]).await?[0]).is_some());

    // the same through the fluent API: begin, queue a create-only write, commit
    let mut transaction = db.begin_transaction().await?;
    let file = File { owner: "bob".into(), size: 7 };
    db.fluent()
        .update()
        .in_col("files")
        .precondition(FirestoreWritePrecondition::Exists(false))
        .document_id("fluent")
        .parent(tenant_parent(&db, "t1"))
        .object(&file)
        .add_to_transaction(&mut transaction)?;
    let response = transaction.commit().await?;
    assert_eq!(response.write_results.len(), 1);
    assert!(response.commit_time.is_some());
    let read: Vec<(String, Option<File>)> = db
        .fluent()
        .select()
        .by_id_in("files")
        .parent(tenant_parent(&db, "t1"))
        .obj()
        .batch(["fluent", "absent"])
        .await?
        .collect()
        .await;
    assert_eq!(read, [("fluent".to_string(), Some(file)), ("absent".to_string(), None)]);

    // and a transaction rolled back
    let mut client = db.client().get();
    let begun = client.begin_transaction(BeginTransactionRequest { database: database.clone(), ..Default::default() });
    let transaction = begun.await?.into_inner().transaction;
    client.rollback(RollbackRequest { database, transaction, request_options: None }).await?;
    Ok(())
}

#[tokio::test]
async fn values_of_every_kind_round_trip_unchanged() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = connect(&emulator).await?;
    let name = file_name(&db, "t1", "values");
    let map = value(ValueType::MapValue(MapValue {
        fields: HashMap::from([("inner".to_string(), string("v")), ("n".to_string(), integer(-5))]),
    }));
    let array = value(ValueType::ArrayValue(ArrayValue { values: vec![string("a"), integer(1), null()] }));
    let values = [
        ("string", string("héllo")),
        ("empty_string", string("")),
        ("largest_exact_integer", integer((1 << 53) - 1)),
        ("smallest_exact_integer", integer(-(1 << 53) + 1)),
        ("boolean", value(ValueType::BooleanValue(true))),
        ("double", value(ValueType::DoubleValue(0.25))),
        ("timestamp", value(ValueType::TimestampValue(Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 }))),
        ("null", null()),
        ("bytes", value(ValueType::BytesValue(vec![0, 1, 255]))),
        ("map", map),
        ("array", array),
        ("empty_array", value(ValueType::ArrayValue(ArrayValue::default()))),
    ];
    commit(&db, vec![set(&name, &values, None)]).await?;
    let results = batch_get(&db, &[&name]).await?;
    let document = found(&results[0]).context("the document was written")?;
    for (field, value) in &values {
        assert_eq!(document.fields.get(*field), Some(value), "{field}");
    }

    // the crate's serde mapping: a `None` is left out, a `FirestoreTimestamp` is a timestamp (microseconds)
    let record = Record {
        name: "x".into(),
        count: -3,
        done: true,
        note: None,
        tags: vec!["a".into()],
        counters: HashMap::from([("k".to_string(), 1)]),
        at: FirestoreTimestamp("2024-01-02T03:04:05.123456Z".parse()?),
    };
    let record_name = file_name(&db, "t1", "record");
    let written = FirestoreDb::serialize_to_doc(&record_name, &record)?;
    assert!(!written.fields.contains_key("note"));
    commit(&db, vec![Write { operation: Some(Operation::Update(written)), ..Default::default() }]).await?;
    let results = batch_get(&db, &[&record_name]).await?;
    let read: Record = FirestoreDb::deserialize_doc_to(found(&results[0]).context("the record was written")?)?;
    assert_eq!(read, record);
    Ok(())
}

#[tokio::test]
async fn the_emulator_departs_from_firestore_in_ways_a_backend_must_not_rely_on() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = connect(&emulator).await?;
    let [a, b, c] = ["a", "b", "c"].map(|id| file_name(&db, "t1", id));
    commit(&db, vec![set(&a, &[("size", integer(1))], None), set(&b, &[("size", integer(1))], None)]).await?;
    let long_ago = Timestamp { seconds: 1, nanos: 0 };

    // `update_time` preconditions are not checked (Firestore: FAILED_PRECONDITION)
    commit(&db, vec![set(&a, &[("size", integer(2))], Some(ConditionType::UpdateTime(long_ago)))]).await?;
    commit(&db, vec![delete(&b, Some(ConditionType::UpdateTime(long_ago)))]).await?;
    // a commit is not atomic: the writes before the failing one stay applied
    let failed = commit(&db, vec![set(&c, &[], None), set(&a, &[], Some(ConditionType::Exists(false)))]).await;
    assert_eq!(failed.map_err(|error| error.code()).err(), Some(Code::AlreadyExists));
    // a write without a mask merges into the document instead of replacing it
    commit(&db, vec![set(&a, &[("owner", string("alice"))], None)]).await?;
    let results = batch_get(&db, &[&a, &b, &c]).await?;
    let merged = found(&results[0]).context("a exists")?;
    assert_eq!(merged.fields.get("size"), Some(&integer(2)));
    assert_eq!(merged.fields.get("owner"), Some(&string("alice")));
    assert_eq!(results[1], BatchGetResult::Missing(b.clone()));
    assert!(found(&results[2]).is_some());

    // integers beyond ±(2^53 - 1) are refused, and transaction ids are not checked
    let error = commit(&db, vec![set(&c, &[("n", integer(1 << 53))], None)]).await.expect_err("2^53 is refused");
    assert_eq!((error.code(), error.message()), (Code::Unknown, "Something went wrong"));
    let request = CommitRequest {
        database: db.get_database_path().clone(),
        writes: vec![delete(&c, None)],
        transaction: b"never begun".to_vec(),
        request_options: None,
    };
    db.client().get().commit(request).await?;

    // queries ignore offsets, and break ties by first use of the name, not by `__name__` (cursors: see above)
    commit(&db, vec![set(&file_name(&db, "t2", "y"), &[], None), set(&file_name(&db, "t2", "x"), &[], None)]).await?;
    let mut query = files_of("", Direction::Ascending, None);
    query.r#where = None;
    query.offset = 1;
    let listed = run_query(&db, &tenant_parent(&db, "t2"), query).await?;
    assert_eq!(ids(&listed), ["y", "x"]);
    // and a collection-group query sees only the collection directly under its parent
    let mut group = files_of("", Direction::Ascending, None);
    group.r#where = None;
    group.from[0].all_descendants = true;
    assert_eq!(ids(&run_query(&db, db.get_documents_path(), group).await?), Vec::<&str>::new());

    // the single-document RPCs (here GetDocument, behind `ping`) are not implemented
    let error = db.ping().await.expect_err("GetDocument is not implemented");
    assert!(error.to_string().contains("GetDocument> not implemented"), "{error}");
    Ok(())
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct File {
    owner: String,
    size: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    count: i64,
    done: bool,
    note: Option<String>,
    tags: Vec<String>,
    counters: HashMap<String, i64>,
    at: FirestoreTimestamp,
}

/// A client of `emulator`'s project that sends its requests to the emulator, with no credentials.
async fn connect(emulator: &FirestoreEmulator) -> anyhow::Result<FirestoreDb> {
    let options = FirestoreDbOptions::new(emulator.project_id().to_string()).with_firebase_api_url(emulator.url());
    FirestoreDb::with_options_auth(options, anonymous::Builder::new().build())
        .await
        .with_context(|| format!("cannot connect to the firestore emulator at {}", emulator.host()))
}

/// `projects/P/databases/(default)/documents/tenants/TENANT`, the parent of a tenant's collections.
fn tenant_parent(db: &FirestoreDb, tenant: &str) -> String {
    format!("{}/tenants/{tenant}", db.get_documents_path())
}

/// The full name of document `id` of the `files` collection of `tenant`.
fn file_name(db: &FirestoreDb, tenant: &str, id: &str) -> String {
    format!("{}/files/{id}", tenant_parent(db, tenant))
}

fn value(kind: ValueType) -> Value {
    Value { value_type: Some(kind) }
}

fn string(text: &str) -> Value {
    value(ValueType::StringValue(text.to_string()))
}

fn integer(number: i64) -> Value {
    value(ValueType::IntegerValue(number))
}

fn null() -> Value {
    value(ValueType::NullValue(0))
}

fn reference(name: &str) -> Value {
    value(ValueType::ReferenceValue(name.to_string()))
}

/// A write of document `name` with `fields`, under `precondition`.
fn set(name: &str, fields: &[(&str, Value)], precondition: Option<ConditionType>) -> Write {
    let fields = fields.iter().map(|(field, value)| (field.to_string(), value.clone())).collect();
    Write {
        current_document: precondition.map(|condition| Precondition { condition_type: Some(condition) }),
        operation: Some(Operation::Update(Document { name: name.to_string(), fields, ..Default::default() })),
        ..Default::default()
    }
}

/// A delete of document `name`, under `precondition`.
fn delete(name: &str, precondition: Option<ConditionType>) -> Write {
    Write {
        current_document: precondition.map(|condition| Precondition { condition_type: Some(condition) }),
        operation: Some(Operation::Delete(name.to_string())),
        ..Default::default()
    }
}

/// Commits `writes` in one `Commit` call, outside any transaction.
async fn commit(db: &FirestoreDb, writes: Vec<Write>) -> Result<CommitResponse, Status> {
    let request = CommitRequest {
        database: db.get_database_path().clone(),
        writes,
        transaction: Vec::new(),
        request_options: None,
    };
    Ok(db.client().get().commit(request).await?.into_inner())
}

/// Reads the documents `names` with one `BatchGetDocuments` call: one result per name.
async fn batch_get(db: &FirestoreDb, names: &[&str]) -> anyhow::Result<Vec<BatchGetResult>> {
    let request = BatchGetDocumentsRequest {
        database: db.get_database_path().clone(),
        documents: names.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    let mut responses = db.client().get().batch_get_documents(request).await?.into_inner();
    let mut results = Vec::new();
    while let Some(response) = responses.message().await? {
        // a response that only carries a transaction id has no result
        results.extend(response.result);
    }
    Ok(results)
}

/// The found document of a batch get result.
fn found(result: &BatchGetResult) -> Option<&Document> {
    match result {
        BatchGetResult::Found(document) => Some(document),
        BatchGetResult::Missing(_) => None,
    }
}

/// The `files` of `parent` whose `owner` is `owner`, by `size` then name, at most `limit`.
fn files_of(owner: &str, direction: Direction, limit: Option<i32>) -> StructuredQuery {
    let order = |field: &str| Order {
        field: Some(FieldReference { field_path: field.to_string() }),
        direction: direction as i32,
    };
    StructuredQuery {
        from: vec![CollectionSelector { collection_id: "files".to_string(), all_descendants: false }],
        r#where: Some(Filter {
            filter_type: Some(FilterType::FieldFilter(FieldFilter {
                field: Some(FieldReference { field_path: "owner".to_string() }),
                op: field_filter::Operator::Equal as i32,
                value: Some(string(owner)),
            })),
        }),
        order_by: vec![order("size"), order("__name__")],
        limit,
        ..Default::default()
    }
}

/// Runs `query` on the collections under `parent` with one `RunQuery` call.
async fn run_query(db: &FirestoreDb, parent: &str, query: StructuredQuery) -> anyhow::Result<Vec<Document>> {
    let request = RunQueryRequest {
        parent: parent.to_string(),
        query_type: Some(run_query_request::QueryType::StructuredQuery(query)),
        ..Default::default()
    };
    let mut responses = db.client().get().run_query(request).await?.into_inner();
    let mut documents = Vec::new();
    while let Some(response) = responses.message().await? {
        // the last response may carry no document
        documents.extend(response.document);
    }
    Ok(documents)
}

/// The ids (last name segments) of `documents`.
fn ids(documents: &[Document]) -> Vec<&str> {
    documents.iter().map(|document| document.name.rsplit('/').next().unwrap_or_default()).collect()
}

/// Polls until nothing listens on `addr` any more, or fails after a deadline.
async fn wait_until_refused(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            outcome => anyhow::ensure!(Instant::now() < deadline, "{addr} still accepts connections ({outcome:?})"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
