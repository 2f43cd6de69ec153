/* Axis ticks for plot.h's figures: nice steps (1, 2 or 5 times a power of
 * ten), decades on log axes, and labels in one style per axis. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot_impl.h"

/* k such that k * step is the first multiple of step >= lo (a little slack for rounding) */
static double first_multiple(double lo, double step)
{
    return ceil(lo / step - 1e-9);
}

static int64_t count_multiples(double lo, double hi, double step)
{
    double n = floor(hi / step + 1e-9) - first_multiple(lo, step) + 1;
    return n < 0 ? 0 : n > 1e6 ? 1000000 : (int64_t)n;
}

int pg_plot_ticks(double lo, double hi, int max_ticks, bool integer, double *ticks, double *step)
{
    *step = 0;
    if (!isfinite(lo) || !isfinite(hi) || lo > hi || !isfinite(hi - lo))
        return 0;
    if (lo == hi) { /* one tick; a step that labels it with three significant digits */
        ticks[0] = lo;
        *step = lo == floor(lo) ? 1.0 : pow(10, floor(log10(fabs(lo))) - 2);
        return 1;
    }
    max_ticks = max_ticks < 2 ? 2 : max_ticks > PG_PLOT_MAX_TICKS ? PG_PLOT_MAX_TICKS : max_ticks;
    /* the smallest nice step that gives at most max_ticks ticks */
    static const double MULT[3] = {1, 2, 5};
    double base = pow(10, floor(log10((hi - lo) / max_ticks)));
    double s = base;
    for (int i = 0; i < 60; i++) {
        s = MULT[i % 3] * base * pow(10, i / 3);
        if ((!integer || s >= 1) && count_multiples(lo, hi, s) <= max_ticks)
            break;
    }
    int64_t n = count_multiples(lo, hi, s);
    double k0 = first_multiple(lo, s);
    for (int64_t i = 0; i < n && i < PG_PLOT_MAX_TICKS; i++) {
        double v = (k0 + (double)i) * s;
        ticks[i] = fabs(v) < 1e-12 * s ? 0.0 : v; /* an exact 0, not -0 or 1e-17 */
    }
    *step = s;
    return (int)(n < PG_PLOT_MAX_TICKS ? n : PG_PLOT_MAX_TICKS);
}

/* Ticks m * 10^e (m from ms) inside [lo, hi], evenly spread on a log axis
 * within each power of ten; 0 when more than max_ticks. *step: the first
 * tick's power of ten (for the labels' decimals). */
static int mantissa_ticks(double lo, double hi, int max_ticks, const int *ms, int nm, double *ticks, double *step)
{
    int n = 0;
    for (int e = (int)floor(log10(lo)); e <= (int)floor(log10(hi)); e++)
        for (int k = 0; k < nm; k++) {
            double v = ms[k] * pow(10, e);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9))
                continue;
            if (n == max_ticks)
                return 0;
            ticks[n++] = v;
        }
    *step = n ? pow(10, floor(log10(ticks[0]) + 1e-9)) : 0;
    return n;
}

int pg_plot_log_ticks(double lo, double hi, int max_ticks, double *ticks, double *step)
{
    *step = 0;
    if (!(lo > 0) || !isfinite(hi) || lo > hi)
        return 0;
    max_ticks = max_ticks < 2 ? 2 : max_ticks > PG_PLOT_MAX_TICKS ? PG_PLOT_MAX_TICKS : max_ticks;
    int e0 = (int)ceil(log10(lo) - 1e-9), e1 = (int)floor(log10(hi) + 1e-9);
    if (e1 - e0 + 1 < 2) { /* under two powers of ten: 1-2-5 ticks, else every 1..9, else linear */
        static const int M125[] = {1, 2, 5}, M19[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        int n = mantissa_ticks(lo, hi, max_ticks, M125, 3, ticks, step);
        if (n < 2)
            n = mantissa_ticks(lo, hi, max_ticks, M19, 9, ticks, step);
        return n >= 2 ? n : pg_plot_ticks(lo, hi, max_ticks, false, ticks, step);
    }
    int k = (e1 - e0 + max_ticks) / max_ticks; /* every k-th decade: ceil(decades / max_ticks) */
    int n = 0;
    for (int e = (int)ceil((double)e0 / k) * k; e <= e1 && n < max_ticks; e += k)
        ticks[n++] = pow(10, e);
    return n;
}

/* "1e-05" -> "1e-5", "2.50e+06" -> "2.5e6": no padding, no plus, no trailing zeros */
static void tidy_number(char *s)
{
    char *e = strchr(s, 'e');
    char exp[16] = "";
    if (e) {
        int x = 0;
        sscanf(e + 1, "%d", &x);
        snprintf(exp, sizeof exp, "e%d", x);
        *e = '\0';
    }
    if (strchr(s, '.')) {
        size_t n = strlen(s);
        while (n > 0 && s[n - 1] == '0')
            s[--n] = '\0';
        if (n > 0 && s[n - 1] == '.')
            s[--n] = '\0';
    }
    if (strcmp(s, "-0") == 0)
        strcpy(s, "0");
    strcat(s, exp);
}

static void decade_label(char *buf, double v)
{
    int e = (int)lround(log10(v));
    if (e >= -2 && e <= 3)
        snprintf(buf, PG_PLOT_LABEL_LEN, "%.*f", e < 0 ? -e : 0, pow(10, e));
    else
        snprintf(buf, PG_PLOT_LABEL_LEN, "1e%d", e);
}

static void sci_label(char *buf, double v, double step)
{
    if (v == 0) {
        strcpy(buf, "0");
        return;
    }
    int e = (int)floor(log10(fabs(v)) + 1e-9);
    int d = e - (int)floor(log10(step) + 1e-9);
    d = d < 0 ? 0 : d > 6 ? 6 : d;
    snprintf(buf, PG_PLOT_LABEL_LEN, "%.*fe%d", d, v / pow(10, e), e);
    tidy_number(buf);
}

void pg_plot_tick_labels(const double *ticks, int n, double step, char labels[][PG_PLOT_LABEL_LEN])
{
    double big = 0;
    for (int i = 0; i < n; i++)
        big = fmax(big, fabs(ticks[i]));
    bool sci = big >= 1e5 || (big > 0 && big < 1e-3);
    int decimals = step > 0 ? (int)-floor(log10(step) + 1e-9) : 0;
    decimals = decimals < 0 ? 0 : decimals > 12 ? 12 : decimals;
    for (int i = 0; i < n; i++) {
        if (step == 0)
            decade_label(labels[i], ticks[i]);
        else if (sci)
            sci_label(labels[i], ticks[i], step);
        else {
            snprintf(labels[i], PG_PLOT_LABEL_LEN, "%.*f", decimals, ticks[i]);
            if (labels[i][0] == '-' && strspn(labels[i] + 1, "0.") == strlen(labels[i] + 1))
                memmove(labels[i], labels[i] + 1, strlen(labels[i])); /* "-0.0" -> "0.0" */
        }
    }
}

void pg_plot_number(char *buf, size_t size, double v)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.3g", v);
    tidy_number(tmp);
    snprintf(buf, size, "%s", tmp);
}
