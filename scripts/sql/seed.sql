-- Generates posts shaped like the real ones. Plain SQL, so that psql and the
-- tests' own client can both run it; the size comes from settings:
--   SET seed.posts = 20000;             -- how many posts
--   SET seed.first = 17900000000000000; -- optional: ids start after it
--   SET seed.unfetchable = 0.005;       -- optional: share of cover images
--                                       -- the stand-in cannot fetch
-- About 85 % are due: the rest are suspected (true or NULL), stories, or
-- have no product type. Captions vary in length, with emoji and newlines;
-- some are NULL, some ''. Carousels have two media items, videos a
-- thumbnail (most of them), one post in 13 has no media at all, and one in
-- 997 has an id that is not all digits.

CREATE TEMP TABLE seed_numbers ON COMMIT DROP AS
SELECT n,
       coalesce(nullif(current_setting('seed.first', true), ''), '17900000000000000')::bigint + n AS k
FROM generate_series(1, current_setting('seed.posts')::int) AS n;

INSERT INTO instagram.core_posts
    (ig_media_id, shortcode, ig_user_id, caption, "timestamp", media_type,
     media_product_type, suspected)
SELECT
    CASE WHEN n % 997 = 13 THEN 'legacy_' || k ELSE k::text END,
    'SC' || k,
    (1780000000 + n % 500)::text,
    CASE
        WHEN n % 11 = 0 THEN NULL
        WHEN n % 17 = 0 THEN ''
        ELSE 'Post ' || k || E' \u2728 #summer #travel\n'
             || repeat('golden hour by the sea ', 1 + n % 12)
    END,
    timestamp '2024-01-01' + n * interval '37 seconds',
    CASE WHEN n % 5 = 0 THEN 'VIDEO' WHEN n % 7 = 0 THEN 'CAROUSEL_ALBUM' ELSE 'IMAGE' END,
    CASE
        WHEN n % 23 = 0 THEN 'STORY'
        WHEN n % 29 = 0 THEN NULL
        WHEN n % 5 = 0 THEN 'REELS'
        ELSE 'FEED'
    END,
    CASE WHEN n % 19 = 0 THEN true WHEN n % 31 = 0 THEN NULL ELSE false END
FROM seed_numbers;

INSERT INTO instagram.core_post_media
    (ig_media_id, media_order, parent_ig_media_id, media_type, media_url, thumbnail_url)
SELECT
    post_id || CASE WHEN item = 0 THEN '' ELSE '_' || item END,
    item,
    post_id,
    CASE WHEN video AND item = 0 THEN 'VIDEO' ELSE 'IMAGE' END,
    'https://scontent.cdninstagram.com/v/t51.2885-15/' || post_id || '_' || item
        || CASE WHEN unfetchable THEN '_unfetchable' ELSE '' END
        || '_n.jpg?stp=dst-jpg_e35&_nc_ht=scontent.cdninstagram.com&oh=00_'
        || md5(post_id) || '&oe=67A1B2C3',
    CASE WHEN video AND n % 10 <> 5
        THEN 'https://scontent.cdninstagram.com/v/t51.2885-15/' || post_id
             || CASE WHEN unfetchable THEN '_unfetchable' ELSE '' END || '_thumb.jpg'
    END
FROM (
    SELECT n,
           CASE WHEN n % 997 = 13 THEN 'legacy_' || k ELSE k::text END AS post_id,
           n % 5 = 0 AS video,
           n % 7 = 0 AND n % 5 <> 0 AS carousel,
           -- Spread evenly: Knuth's multiplicative hash of n, in thousandths.
           (n * 2654435761) % 1000
               < 1000 * coalesce(nullif(current_setting('seed.unfetchable', true), ''), '0')::float8
               AS unfetchable
    FROM seed_numbers
    WHERE n % 13 <> 0
) s
CROSS JOIN LATERAL generate_series(0, CASE WHEN carousel THEN 1 ELSE 0 END) AS item;

ANALYZE instagram.core_posts;
ANALYZE instagram.core_post_media;
