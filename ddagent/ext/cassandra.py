"""Cassandra tags."""

TYPE = "cassandra"
CLUSTER = "cassandra.cluster"
KEYSPACE = "cassandra.keyspace"
CONSISTENCY_LEVEL = "cassandra.consistency_level"
PAGINATED = "cassandra.paginated"
ROW_COUNT = "db.row_count"  # today's metric (the seed used "cassandra.row_count")
COMPRESSION = "cassandra.compression"
CQL_VERSION = "cassandra.cql_version"
BATCH_SIZE = "cassandra.batch_size"
