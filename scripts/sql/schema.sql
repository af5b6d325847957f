-- The tables the job reads and writes, as ../shared/spec/schema.md describes
-- them. Used by the tests, the benchmarks and run-local.sh; production
-- databases already have them.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS instagram;

CREATE TABLE IF NOT EXISTS instagram.core_posts (
    ig_media_id        varchar(50) PRIMARY KEY,
    shortcode          varchar(50),
    ig_user_id         varchar(50),
    caption            text,
    "timestamp"        timestamp,
    media_type         varchar(20),
    media_product_type varchar(20),
    followed_post      boolean DEFAULT false,
    authors_checked    boolean DEFAULT false,
    suspected          boolean DEFAULT false,
    inserted_at        timestamp DEFAULT now()
);

CREATE TABLE IF NOT EXISTS instagram.core_post_media (
    ig_media_id        varchar(50) NOT NULL,
    media_order        integer NOT NULL,
    parent_ig_media_id varchar(50),
    media_type         varchar(20),
    media_url          text,
    video_url          text,
    thumbnail_url      text,
    PRIMARY KEY (ig_media_id, media_order)
);

-- The width is set by whoever runs this file (psql -v dimension=512).
CREATE TABLE IF NOT EXISTS instagram.post_embeddings (
    ig_media_id varchar(50) PRIMARY KEY REFERENCES instagram.core_posts (ig_media_id),
    embedding   vector(:dimension) NOT NULL,
    created_at  timestamp DEFAULT now()
);
