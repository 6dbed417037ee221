"""The live web dashboard: a read-only view of the cluster (node map, jobs and gangs,
teams, health) fed by shared watches and streamed to browsers as server-sent events.

- `model`: pure summaries of nodes, jobs, gangs, teams and health events;
- `hub`: the watches, what changed, and each browser's bounded queue of changes;
- `auth`: who may look (the API server's TokenReview and SubjectAccessReview);
- `server`: the aiohttp application (page, snapshot, event stream, node details);
- `cli`: `gpuyard dashboard`.
"""
