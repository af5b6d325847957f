-- Generates :posts posts shaped like the real ones (psql -v posts=20000).
-- About 70 % are due: the rest are suspected, stories, or have no product
-- type. Captions vary in length, some are NULL or ''; carousels, videos with
-- and without thumbnails, posts without media, and a few ids that are not
-- all digits. Ids start at :first (default 17900000000000000) so several
-- seeds can be added to one database.
\if :{?first}
\else
\set first 17900000000000000
\endif

INSERT INTO instagram.core_posts
    (ig_media_id, shortcode, ig_user_id, caption, "timestamp", media_type,
     media_product_type, suspected)
SELECT
    CASE WHEN n % 997 = 13 THEN 'legacy_' || n ELSE (:first + n)::text END,
    'SC' || n,
    (1780000000 + n % 500)::text,
    CASE
        WHEN n % 11 = 0 THEN NULL
        WHEN n % 17 = 0 THEN ''
        ELSE 'Post ' || n || E' \u2728 #summer #travel\n'
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
FROM generate_series(1, :posts) AS n;

-- The first media item of most posts, and a second item for carousels.
INSERT INTO instagram.core_post_media
    (ig_media_id, media_order, parent_ig_media_id, media_type, media_url, thumbnail_url)
SELECT
    p.ig_media_id || CASE WHEN item = 0 THEN '' ELSE '_' || item END,
    item,
    p.ig_media_id,
    CASE WHEN p.media_type = 'VIDEO' AND item = 0 THEN 'VIDEO' ELSE 'IMAGE' END,
    'https://scontent.cdninstagram.com/v/t51/' || p.ig_media_id || '_' || item
        || '.jpg?stp=dst-jpg&oh=00_' || md5(p.ig_media_id) || '&oe=67A1B2C3',
    CASE WHEN p.media_type = 'VIDEO' AND right(p.ig_media_id, 1) <> '3'
        THEN 'https://scontent.cdninstagram.com/v/t51/' || p.ig_media_id || '_thumb.jpg'
    END
FROM instagram.core_posts p
CROSS JOIN LATERAL generate_series(0, CASE WHEN p.media_type = 'CAROUSEL_ALBUM' THEN 1 ELSE 0 END) AS item
WHERE p.shortcode LIKE 'SC%'
  AND substr(p.shortcode, 3)::bigint BETWEEN 1 AND :posts
  AND substr(p.shortcode, 3)::bigint % 13 <> 0
  AND NOT EXISTS (SELECT 1 FROM instagram.core_post_media m WHERE m.parent_ig_media_id = p.ig_media_id);

ANALYZE instagram.core_posts;
ANALYZE instagram.core_post_media;
