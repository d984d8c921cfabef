use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::SinkError;

/// How long to wait for the broker to answer a metadata or admin request
/// before calling it unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one topic in [`ensure_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// It was created with this many partitions.
    Created(i32),
    /// It already existed with this many partitions.
    Existed(i32),
}

fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> SinkError {
    let context = context.into();
    move |cause| SinkError::Kafka { context, cause }
}

/// Partition counts of the named topics that exist (absent ones are left out).
pub async fn fetch_partition_counts(
    config: &ClientConfig,
    topics: &[String],
) -> Result<BTreeMap<String, i32>, SinkError> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(kafka("create admin client"))?;
    let brokers = config.get("bootstrap.servers").unwrap_or("?").to_string();
    let metadata = tokio::task::spawn_blocking(move || {
        let m = admin.inner().fetch_metadata(None, METADATA_TIMEOUT);
        (admin, m)
    })
    .await
    .map_err(|e| SinkError::Inconsistent(format!("metadata task failed: {e}")))?
    .1
    .map_err(kafka(format!("cannot reach Kafka brokers at {brokers}")))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && topics.iter().any(|n| n == t.name()))
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Creates each of `topics` that is missing, with `partitions` partitions and
/// replication factor `replication`. Safe to run again: existing topics are
/// left as they are (even with another partition count, which is reported).
pub async fn ensure_topics(
    config: &ClientConfig,
    topics: &[String],
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>, SinkError> {
    let existing = fetch_partition_counts(config, topics).await?;
    let missing: Vec<&String> = topics.iter().filter(|t| !existing.contains_key(*t)).collect();
    let mut created = BTreeMap::new();
    if !missing.is_empty() {
        let admin: AdminClient<DefaultClientContext> =
            config.create().map_err(kafka("create admin client"))?;
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t.as_str(), partitions, TopicReplication::Fixed(replication)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(METADATA_TIMEOUT))
            .request_timeout(Some(METADATA_TIMEOUT));
        let results = admin.create_topics(new.iter(), &opts).await.map_err(kafka("create topics"))?;
        for r in results {
            match r {
                Ok(name) => {
                    created.insert(name, partitions);
                }
                // Lost a race with another creator: fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(SinkError::Kafka {
                        context: format!("create topic {name}"),
                        cause: KafkaError::AdminOp(code),
                    });
                }
            }
        }
    }
    Ok(topics
        .iter()
        .map(|t| {
            let outcome = match (created.get(t), existing.get(t)) {
                (Some(p), _) => TopicOutcome::Created(*p),
                (None, Some(p)) => TopicOutcome::Existed(*p),
                (None, None) => TopicOutcome::Existed(partitions),
            };
            (t.clone(), outcome)
        })
        .collect())
}
