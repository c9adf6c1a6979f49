"""MongoDB tags."""

TYPE = "mongodb"
COLLECTION = "mongodb.collection"
DB = "mongodb.db"
QUERY = "mongodb.query"
ROWS = "mongodb.rows"
