/* bias_lab's report.html (a part of examples/bias_lab.c, included by it after
 * bias_lab_seeds.h): one self-contained page, the figures embedded as base64
 * data: URIs (RFC 2397, RFC 4648 section 4), inline CSS and JavaScript, no
 * external resource, so it opens offline in any browser. Per scheme: a slider
 * over the epochs of the first seed's figures, its verdict, its rate over the
 * seeds and the run that missed the planted offsets, if any.
 *
 * report.html#selftest checks itself on load (tests/browser_check.sh reads the
 * result with headless Chromium): every image decoded (complete, naturalWidth
 * > 0), and each slider, moved through every epoch, shows exactly that
 * epoch's figures, a different image at each position. The result goes into
 * document.title and the element #selftest: "selftest: PASS (...)" or
 * "selftest: FAIL (...): what failed". */
#ifndef PG_EXAMPLES_BIAS_LAB_REPORT_H
#define PG_EXAMPLES_BIAS_LAB_REPORT_H

/* RFC 4648 section 4: every 3 bytes become 4 characters of the 64-letter
 * alphabet, the last group padded with '='. */
static void bl_base64(FILE *f, const uint8_t *in, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        char q[4] = {A[v >> 18 & 63], A[v >> 12 & 63], i + 1 < n ? A[v >> 6 & 63] : '=', i + 2 < n ? A[v & 63] : '='};
        fwrite(q, 1, 4, f);
    }
}

/* <img alt="alt" src="data:image/png;base64,..."> of the file dir/name. 0 or -1. */
static int bl_embed_png(FILE *f, const char *dir, const char *name, const char *alt)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *in = fopen(path, "rb");
    if (!in) {
        fprintf(stderr, "bias_lab: report.html: cannot read '%s': %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0, got = 1;
    bool ok = true;
    while (ok && got > 0) {
        if (n == cap) {
            uint8_t *b = realloc(buf, cap = cap ? 2 * cap : 65536);
            ok = b != NULL;
            buf = b ? b : buf;
            if (!ok)
                break;
        }
        got = fread(buf + n, 1, cap - n, in);
        n += got;
    }
    ok = ok && !ferror(in);
    fclose(in);
    if (ok) {
        fprintf(f, "<img alt=\"%s\" src=\"data:image/png;base64,", alt);
        bl_base64(f, buf, n);
        fputs("\">", f);
    } else {
        fprintf(stderr, "bias_lab: report.html: cannot read '%s' into memory\n", path);
    }
    free(buf);
    return ok ? 0 : -1;
}

static const char BL_REPORT_CSS[] =
    "body{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left}"
    "th{background:#eee}section{border-top:2px solid #888;margin-top:1.5em}"
    ".figs img{margin:.3em;vertical-align:top;max-width:100%}.yes{color:#060;font-weight:bold}"
    ".no{color:#a00;font-weight:bold}input[type=range]{width:20em;vertical-align:middle}"
    "#selftest{font-family:monospace}[hidden]{display:none}";

/* Shows epoch e of a section; the slider, the label and #selftest use it. */
static const char BL_REPORT_JS[] =
    "function show(sec,e){sec.querySelectorAll('.epoch').forEach(function(d){d.hidden=d.dataset.epoch!==String(e);});"
    "sec.querySelector('.shown').textContent=e;}\n"
    "var secs=Array.prototype.slice.call(document.querySelectorAll('section.scheme'));\n"
    "secs.forEach(function(sec){var r=sec.querySelector('input[type=range]');"
    "r.addEventListener('input',function(){show(sec,r.value);});show(sec,r.value);});\n"
    "function selftest(){var bad=[],imgs=Array.prototype.slice.call(document.images),moves=0;\n"
    " imgs.forEach(function(im){if(!(im.complete&&im.naturalWidth>0))bad.push('image \"'+im.alt+'\" did not load');});\n"
    " secs.forEach(function(sec){var r=sec.querySelector('input[type=range]'),prev=null,start=r.value;\n"
    "  for(var e=+r.min;e<=+r.max;e++){r.value=e;r.dispatchEvent(new Event('input'));moves++;\n"
    "   var vis=Array.prototype.slice.call(sec.querySelectorAll('.epoch')).filter(function(d){return !d.hidden;});\n"
    "   if(vis.length!==1||vis[0].dataset.epoch!==String(e)){bad.push(sec.id+': slider at '+e+' shows '+vis.length+' epochs');continue;}\n"
    "   var im=vis[0].querySelector('img');\n"
    "   if(!im||im.offsetWidth===0)bad.push(sec.id+': epoch '+e+' image not displayed');\n"
    "   else if(im.src===prev)bad.push(sec.id+': epoch '+e+' shows the same image as epoch '+(e-1));\n"
    "   if(sec.querySelector('.shown').textContent!==String(e))bad.push(sec.id+': label not '+e);\n"
    "   prev=im?im.src:null;}\n"
    "  r.value=start;r.dispatchEvent(new Event('input'));});\n"
    " var ok=bad.length===0&&imgs.length>0&&secs.length>0;\n"
    " var msg='selftest: '+(ok?'PASS':'FAIL')+' ('+imgs.length+' images, '+secs.length+' sliders, '+moves+' positions)'"
    "+(ok?'':': '+(imgs.length?'':'no images; ')+bad.slice(0,5).join('; '));\n"
    " document.title=msg;document.getElementById('selftest').textContent=msg;}\n"
    "window.addEventListener('load',function(){if(location.hash==='#selftest')selftest();});\n";

static void bl_report_tables(FILE *f, const bias_lab_seeds_result *r)
{
    char seeds[512], peaks[96];
    fprintf(f, "<h2>Over %d run%s (%s)</h2>\n<table><tr><th>scheme</th><th>offsets 2 and 5 recovered</th>"
               "<th>accuracy mean</th><th>range</th><th>a run that missed: what its heads learned</th></tr>\n",
            r->n_seeds, r->n_seeds > 1 ? "s" : "", bl_seed_list(r, seeds, sizeof seeds));
    for (int i = 0; i < r->n; i++) {
        const bias_lab_scheme_rate *q = &r->rate[i];
        fprintf(f, "<tr><td><a href=\"#s-%s\">%s</a></td><td class=\"%s\">%d of %d</td><td>%.1f%%</td>"
                   "<td>%.1f .. %.1f%%</td><td>", q->scheme, q->scheme, q->recovered == q->runs ? "yes" : "no",
                q->recovered, q->runs, 100 * q->acc_mean, 100 * q->acc_min, 100 * q->acc_max);
        if (q->has_miss)
            fprintf(f, "seed %" PRIu64 ": %s, accuracy %.1f%%", q->miss.seed,
                    bl_peaks_text(&q->miss, peaks, sizeof peaks), 100 * q->miss.accuracy);
        else
            fputs("-", f);
        fputs("</td></tr>\n", f);
    }
    fprintf(f, "</table>\n<h2>Seed %" PRIu64 " (the run pictured below)</h2>\n<table><tr><th>scheme</th>"
               "<th>loss first &rarr; last</th><th>accuracy</th><th>head 0 peak</th><th>head 1 peak</th>"
               "<th>peaks at 2 and 5?</th><th>divisor</th></tr>\n", r->seeds[0]);
    for (int i = 0; i < r->first.n; i++) {
        const bias_lab_scheme_result *s = &r->first.s[i];
        char div[48] = "-";
        if (s->has_divisor)
            snprintf(div, sizeof div, "%.3g (from 1)", s->divisor);
        fprintf(f, "<tr><td>%s</td><td>%.3f &rarr; %.3f</td><td>%.1f%%</td><td>%d (margin %.2f)</td>"
                   "<td>%d (margin %.2f)</td><td class=\"%s\">%s</td><td>%s</td></tr>\n", s->scheme,
                s->first_loss, s->last_loss, 100 * s->accuracy, s->peak[0], s->margin[0], s->peak[1], s->margin[1],
                s->peaks_ok ? "yes" : "no", s->peaks_ok ? "yes" : "no", div);
    }
    fputs("</table>\n", f);
}

/* One scheme: the slider and every epoch's two figures (all but one hidden),
 * then the run that missed, with its final profile. 0 or -1. */
static int bl_report_scheme(FILE *f, const char *dir, const bias_lab_scheme_result *s, const bias_lab_scheme_rate *q,
                            int epochs)
{
    char name[256], alt[128], peaks[96];
    fprintf(f, "<section class=\"scheme\" id=\"s-%s\"><h2>%s</h2>\n<p>Seed %" PRIu64 ": %s; %s; accuracy %.1f%%. "
               "Over the seeds: recovered in %d of %d runs.</p>\n",
            s->scheme, s->scheme, s->seed, bl_peaks_text(s, peaks, sizeof peaks),
            s->peaks_ok ? "<span class=\"yes\">the planted offsets</span>" : "<span class=\"no\">not the planted offsets</span>",
            100 * s->accuracy, q->recovered, q->runs);
    fprintf(f, "<p><label>epoch <input type=\"range\" min=\"0\" max=\"%d\" value=\"%d\" step=\"1\"></label> "
               "shown: epoch <b class=\"shown\">%d</b> of %d (0 is the initial bias)</p>\n<div class=\"figs\">\n",
            epochs, epochs, epochs, epochs);
    for (int e = 0; e <= epochs; e++) {
        fprintf(f, "<div class=\"epoch\" data-epoch=\"%d\"%s>", e, e == epochs ? "" : " hidden");
        snprintf(name, sizeof name, "bias_%s_epoch%d.png", s->scheme, e);
        snprintf(alt, sizeof alt, "%s, epoch %d: bias heatmaps", s->scheme, e);
        if (bl_embed_png(f, dir, name, alt) != 0)
            return -1;
        snprintf(name, sizeof name, "profile_%s_epoch%d.png", s->scheme, e);
        snprintf(alt, sizeof alt, "%s, epoch %d: bias against distance", s->scheme, e);
        if (bl_embed_png(f, dir, name, alt) != 0)
            return -1;
        fputs("</div>\n", f);
    }
    fputs("</div>\n", f);
    if (q->has_miss) {
        fprintf(f, "<p>A run that missed: seed %" PRIu64 ", accuracy %.1f%%, the heads %s (the planted offsets "
                   "are 2 and 5).</p>\n<div class=\"figs\">", q->miss.seed, 100 * q->miss.accuracy,
                bl_peaks_text(&q->miss, peaks, sizeof peaks));
        snprintf(name, sizeof name, "missed_%s_seed%" PRIu64 ".png", s->scheme, q->miss.seed);
        snprintf(alt, sizeof alt, "%s, seed %" PRIu64 ": final bias against distance", s->scheme, q->miss.seed);
        if (bl_fig_missed(dir, s->scheme, q->miss.seed, q->miss.profile) != 0 || bl_embed_png(f, dir, name, alt) != 0)
            return -1;
        fputs("</div>\n", f);
    }
    fputs("</section>\n", f);
    return 0;
}

/* dir/report.html, written to a temporary file and renamed, so a browser
 * never reads half a page. 0 or -1 (one line on stderr). */
static int bl_write_report(const char *dir, const bias_lab_opts *o, const bias_lab_seeds_result *r)
{
    char path[1024], tmp[1100];
    snprintf(path, sizeof path, "%s/report.html", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "bias_lab: cannot create '%s': %s\n", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bias_lab report</title>\n"
               "<style>%s</style></head><body>\n<h1>bias_lab: do positional biases learn planted offsets?</h1>\n"
               "<p>The target at position i is the pair (x[i-2], x[i-5]) of random symbols 0..7, so a 1-layer, 2-head "
               "causal transformer solves it only if one head looks back <b>2</b> tokens and the other <b>5</b>: the "
               "<b>planted offsets</b>, drawn as the two diagonals d = i - j = 2 and 5 on the heatmaps and as dashed "
               "lines on the profiles. A run recovers them when one head's mean bias peaks at distance 2 and the "
               "other's at 5. %d epochs of %d AdamW steps (batch %d, lr %g), probe batch %d.</p>\n"
               "<p id=\"selftest\"></p>\n",
            BL_REPORT_CSS, o->epochs, o->steps, o->batch, o->lr, o->probe);
    bl_report_tables(f, r);
    int rc = 0;
    for (int i = 0; i < r->first.n && rc == 0; i++)
        rc = bl_report_scheme(f, dir, &r->first.s[i], &r->rate[i], o->epochs);
    fprintf(f, "<script>\n%s</script>\n</body></html>\n", BL_REPORT_JS);
    if (fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "bias_lab: cannot write '%s': %s\n", tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        fprintf(stderr, "bias_lab: cannot rename '%s' to '%s': %s\n", tmp, path, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        remove(tmp);
    return rc;
}

#endif
