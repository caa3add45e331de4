"""clusterproof reference server: a small CMS with today's single-process design."""
