/* tlcut-edged --plan: the edge's side of one candidate of a plan that `tlcut plan -o` wrote
 * (tlcut/deployment.py), read with nlohmann-json as manifest.cpp reads the bundle. Only what the
 * C edge acts on: the cut, the TL, the wire encoding (for the log), the edge engine's precision
 * and threads, checked against the bundle's model and this build's engine. */
#ifndef TLCUT_EDGED_PLAN_H
#define TLCUT_EDGED_PLAN_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char cut[32];        /* a cut index, or "input" (edge only) */
    int tl;              /* 1: the tail after the EdgeTL */
    char encoding[16];   /* what the device sends (the edge reads it from each request) */
    char precision[16];  /* "" where the plan did not record it */
    int threads;         /* 0 where the plan did not record it */
    char label[160];     /* the candidate's name, for the start-up line */
    int unchecked_model; /* 1: the plan does not record its model's sha256 (an older plan) */
} edged_plan;

/* Candidate ``choice`` (0: the best; N: the N-th allowed one, as `tlcut plan` ranks them) of the
 * plan at ``path`` for the bundle in ``bundle_dir``, served by ``engine`` (tlc_engine(): its first word
 * names it).
 * 0 on success; else 2 with one line in ``err`` that says what to do. */
int edged_read_plan(const char *path, const char *bundle_dir, unsigned long long choice, const char *engine,
                    edged_plan *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
