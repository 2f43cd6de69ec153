/* bias_lab over several seeds (a part of examples/bias_lab.c, included by it
 * after its types): the --seeds list, and per scheme how often a run recovers
 * both planted offsets, its accuracy over the runs, and the most instructive
 * run that did not recover them. One run is an anecdote: with seed 11, DPB
 * reaches 100% accuracy with both heads peaking at distance 2. */
#ifndef PG_EXAMPLES_BIAS_LAB_SEEDS_H
#define PG_EXAMPLES_BIAS_LAB_SEEDS_H

typedef struct bias_lab_scheme_rate {
    const char *scheme;
    int runs, recovered;             /* runs, and those whose heads peak at 2 and 5 */
    double acc_mean, acc_min, acc_max;
    bool has_miss;
    bias_lab_scheme_result miss;     /* a run that missed: the most accurate one (miss.seed) */
} bias_lab_scheme_rate;

typedef struct bias_lab_seeds_result {
    int n_seeds;
    uint64_t seeds[BL_MAX_SEEDS];
    bias_lab_result first;           /* the run of seeds[0], the one pictured */
    int n;                           /* schemes */
    bias_lab_scheme_rate rate[BL_MAX_SCHEMES];
    double seconds;
} bias_lab_seeds_result;

/* "N" (no comma): seeds 1..N, N in 1..BL_MAX_SEEDS; "a,b,c": those seeds (at most
 * BL_MAX_SEEDS, none twice). 0, or -1 with the reason in why. */
static int bl_parse_seeds(const char *spec, uint64_t *seeds, int *n, char *why, size_t why_n)
{
    *n = 0;
    if (!spec || !*spec)
        return snprintf(why, why_n, "it is empty"), -1;
    if (!strchr(spec, ',')) {
        char *end;
        errno = 0;
        long v = strtol(spec, &end, 10);
        if (errno || *end || end == spec || v < 1 || v > BL_MAX_SEEDS)
            return snprintf(why, why_n, "a count must be in 1..%d", BL_MAX_SEEDS), -1;
        for (*n = 0; *n < v; (*n)++)
            seeds[*n] = (uint64_t)*n + 1;
        return 0;
    }
    for (const char *p = spec;; p++) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || end == p || (*end != ',' && *end) || *p == '-' || *p == '+' || *p == ' ')
            return snprintf(why, why_n, "'%.*s' is not a seed", (int)strcspn(p, ","), p), -1;
        for (int k = 0; k < *n; k++)
            if (seeds[k] == v)
                return snprintf(why, why_n, "seed %llu is listed twice", v), -1;
        if (*n == BL_MAX_SEEDS)
            return snprintf(why, why_n, "more than %d seeds", BL_MAX_SEEDS), -1;
        seeds[(*n)++] = (uint64_t)v;
        p = end;
        if (!*p)
            return 0;
    }
}

/* Adds one run of a scheme to its rate. */
static void bl_rate_add(bias_lab_scheme_rate *r, const bias_lab_scheme_result *s)
{
    r->scheme = s->scheme;
    r->acc_min = r->runs ? fmin(r->acc_min, s->accuracy) : s->accuracy;
    r->acc_max = r->runs ? fmax(r->acc_max, s->accuracy) : s->accuracy;
    r->acc_mean = (r->acc_mean * r->runs + s->accuracy) / (r->runs + 1);
    r->runs++;
    r->recovered += s->peaks_ok;
    if (!s->peaks_ok && (!r->has_miss || s->accuracy > r->miss.accuracy)) {
        r->miss = *s; /* the most accurate miss: it solved the task some other way, or nearly */
        r->has_miss = true;
    }
}

/* "seeds 1, 2, 3" or "seed 11" into buf */
static const char *bl_seed_list(const bias_lab_seeds_result *r, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "seed%s ", r->n_seeds > 1 ? "s" : "");
    for (int k = 0; k < r->n_seeds && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, "%s%" PRIu64, k ? ", " : "", r->seeds[k]);
    return buf;
}

/* What the heads of a run learned: "peaks at 2 (margin 0.75) and 2 (margin 1.07)" */
static const char *bl_peaks_text(const bias_lab_scheme_result *s, char *buf, size_t n)
{
    snprintf(buf, n, "peaks at %d (margin %.2f) and %d (margin %.2f)", s->peak[0], s->margin[0], s->peak[1],
             s->margin[1]);
    return buf;
}

/* The rate table (markdown), one row per scheme. */
static void bl_print_rates(const bias_lab_seeds_result *r)
{
    char seeds[512], peaks[96];
    printf("\nOver %d runs (%s):\n\n| scheme | offsets 2 and 5 recovered | accuracy mean (range) | a run that "
           "missed |\n|---|---|---|---|\n",
           r->n_seeds, bl_seed_list(r, seeds, sizeof seeds));
    for (int i = 0; i < r->n; i++) {
        const bias_lab_scheme_rate *q = &r->rate[i];
        printf("| %s | %d of %d | %.1f%% (%.1f .. %.1f%%) | ", q->scheme, q->recovered, q->runs, 100 * q->acc_mean,
               100 * q->acc_min, 100 * q->acc_max);
        if (q->has_miss)
            printf("seed %" PRIu64 ": %s, accuracy %.1f%% |\n", q->miss.seed, bl_peaks_text(&q->miss, peaks, sizeof peaks),
                   100 * q->miss.accuracy);
        else
            printf("- |\n");
    }
}

#endif
