"""Real-shaped TikTok exports built from synthetic records (shared by unit and integration tests).

Each renderer writes the same videos the way a real source does: the TikTok
Research API's video objects (a query response, epoch-second timestamps,
hashtag lists, followers only in a separate user-info list) and an
Apify-style scraper export (nested ``authorMeta``/``videoMeta``, ``hashtags``
objects, ISO timestamps with milliseconds, an "original sound" flag), with the
extra fields real exports carry. Importing them must give back the records.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


_WORDS = ["pov", "when", "the", "beat", "drops", "and", "your", "cat", "joins", "in,", "wait", "for", "the", "end"]


def _caption(n: int, hashtags: int) -> str:
    """A caption of exactly ``n`` characters that starts with its hashtags."""
    words = [f"#t{i}" for i in range(hashtags)]
    k = 0
    while len(" ".join(words)) < n:
        words.append(_WORDS[k % len(_WORDS)])
        k += 1
    return " ".join(words)[:n]


def research_api_videos(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Video objects as /v2/research/video/query/ returns them (no follower count)."""
    return [{
        "id": 7_300_000_000_000_000_000 + i,
        "username": f"creator{i % 97}" if r["followers"] is not None else f"hidden{i}",
        "region_code": "US",
        "create_time": _epoch(r["postedAt"]),
        "video_description": _caption(r["captionLength"], r["hashtagCount"]),
        "music_id": 6_900_000_000 + i,
        "like_count": r["likes"],
        "comment_count": r["comments"],
        "share_count": r["shares"],
        "view_count": r["views"],
        "favorites_count": r["saves"],
        "video_duration": r["durationSeconds"],
        "hashtag_names": [f"t{k}" for k in range(r["hashtagCount"])],
        "is_stem_verified": False,
    } for i, r in enumerate(records)]


def research_api_response(records: list[dict[str, Any]]) -> bytes:
    """One query response page: ``{"data": {"videos": [...], "cursor", "has_more"}, "error": {...}}``."""
    doc = {"data": {"videos": research_api_videos(records), "cursor": len(records), "has_more": False,
                    "search_id": "7301234567890123456"},
           "error": {"code": "ok", "message": "", "log_id": "20261201081600ABCDEF"}}
    return json.dumps(doc).encode()


def research_api_users(records: list[dict[str, Any]]) -> bytes:
    """User info (JSON Lines) for every creator whose follower count is public."""
    users = {}
    for i, r in enumerate(records):
        if r["followers"] is not None:
            users[f"creator{i % 97}"] = r["followers"]
    return "".join(json.dumps({"username": u, "display_name": u.title(), "follower_count": f,
                               "following_count": 12, "likes_count": 3400, "video_count": 51}) + "\n"
                   for u, f in users.items()).encode()


def research_api_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with followers unique per creator (so the user-info join is well defined)."""
    out, seen = [], {}
    for i, r in enumerate(records):
        r = dict(r)
        if r["followers"] is not None:
            r["followers"] = seen.setdefault(i % 97, r["followers"])
        out.append(r)
    return out


def scraper_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apify-style TikTok scraper items."""
    items = []
    for i, r in enumerate(records):
        author: dict[str, Any] = {"id": str(6_800_000 + i), "name": f"creator{i}", "verified": False,
                                  "following": 40, "heart": 120_000, "video": 88}
        if r["followers"] is not None:
            author["fans"] = r["followers"]
        posted = r["postedAt"].replace("Z", ".000Z")
        items.append({
            "id": str(7_300_000_000_000_000_000 + i),
            "text": _caption(r["captionLength"], r["hashtagCount"]),
            "createTime": _epoch(r["postedAt"]),
            "createTimeISO": posted,
            "authorMeta": author,
            "musicMeta": {"musicName": "original sound" if not r["hasTrendingSound"] else "Trending Song",
                          "musicAuthor": "someone", "musicOriginal": not r["hasTrendingSound"]},
            "webVideoUrl": f"https://www.tiktok.com/@creator{i}/video/{7_300_000_000_000_000_000 + i}",
            "videoMeta": {"height": 1024, "width": 576, "duration": r["durationSeconds"], "format": "mp4"},
            "diggCount": r["likes"],
            "shareCount": r["shares"],
            "playCount": r["views"],
            "collectCount": r["saves"],
            "commentCount": r["comments"],
            "mentions": [],
            "hashtags": [{"id": str(k), "name": f"t{k}", "title": ""} for k in range(r["hashtagCount"])],
            "isAd": False,
        })
    return items


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [{"d": 2}]}`` -> ``{"a/b": 1, "c/0/d": 2}`` (how scraper CSV exports flatten)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{k}/"))
    else:
        out[prefix[:-1]] = obj
    return out


def scraper_csv(records: list[dict[str, Any]], *, bom: bool = True) -> bytes:
    """A flattened scraper CSV: ``authorMeta/fans``, ``hashtags/0/name``... (blank where a video has fewer)."""
    rows = [flatten(item) for item in scraper_items(records)]
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else str(row.get(k, "")).lower() if isinstance(row.get(k), bool)
                         else row.get(k, "") for k in header])
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode()
