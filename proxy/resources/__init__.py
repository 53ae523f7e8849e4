"""Store mode: typed resources served from PostgreSQL and DynamoDB."""
