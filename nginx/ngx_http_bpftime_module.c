
/*
 * SPDX-License-Identifier: MIT
 *
 * ngx_http_bpftime_module: eBPF URL filtering in the access phase.
 *
 * Every worker process hosts one bpftime server (libbpftime_server) on the
 * shared-memory segment named by "bpftime_shm". For each request in a
 * location with "bpftime_url_filter on", the programs attached to the
 * nginx-url target decide: 0 accepts, 400..599 refuses with that status.
 * When the programs cannot decide (a program faulted or ran past its budget,
 * the segment is missing or corrupt), "bpftime_fail" chooses:
 *   closed (default)  refuse with 503 Service Unavailable,
 *   open              accept the request.
 * Policies change under a running nginx with no reload: the server notices
 * a new store generation and re-synchronises before the next request.
 *
 * Acceptance is "no objection" (NGX_DECLINED), so other access modules still
 * decide; under "satisfy any" a 403 of the filter may be overridden by another
 * module's grant, as with "deny". Problems are logged once each by the server
 * library, never once per request (decisions are at debug level).
 *
 *   load_module modules/ngx_http_bpftime_module.so;
 *   http {
 *       bpftime_shm  bpftime;          # default: $BPFTIME_SHM (see the env
 *                                      # directive) or "bpftime"
 *       server {
 *           location / {
 *               bpftime_url_filter  on;
 *               bpftime_fail        closed;
 *           }
 *       }
 *   }
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <bpftime/minimal_syscall_server.h>


#define NGX_HTTP_BPFTIME_FAIL_CLOSED  0
#define NGX_HTTP_BPFTIME_FAIL_OPEN    1


typedef struct {
    ngx_str_t         shm;       /* the segment; empty: the library default */
    ngx_flag_t        used;      /* some location has bpftime_url_filter on */
} ngx_http_bpftime_main_conf_t;


typedef struct {
    ngx_flag_t        url_filter;
    ngx_uint_t        fail;      /* NGX_HTTP_BPFTIME_FAIL_* */
} ngx_http_bpftime_loc_conf_t;


static ngx_int_t ngx_http_bpftime_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_bpftime_failed(ngx_http_request_t *r,
    ngx_http_bpftime_loc_conf_t *blcf, ngx_int_t rc);
static void ngx_http_bpftime_fill(ngx_http_request_t *r,
    struct bpftime_nginx_request *req);
static void ngx_http_bpftime_log(void *user, int level, const char *message);
static char *ngx_http_bpftime_url_filter(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_bpftime_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_bpftime_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_bpftime_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_bpftime_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_bpftime_init_process(ngx_cycle_t *cycle);
static void ngx_http_bpftime_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_bpftime_fail[] = {
    { ngx_string("closed"), NGX_HTTP_BPFTIME_FAIL_CLOSED },
    { ngx_string("open"), NGX_HTTP_BPFTIME_FAIL_OPEN },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_bpftime_commands[] = {

    { ngx_string("bpftime_shm"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bpftime_main_conf_t, shm),
      NULL },

    { ngx_string("bpftime_url_filter"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_bpftime_url_filter,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bpftime_loc_conf_t, url_filter),
      NULL },

    { ngx_string("bpftime_fail"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bpftime_loc_conf_t, fail),
      &ngx_http_bpftime_fail },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_bpftime_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_bpftime_init,                 /* postconfiguration */

    ngx_http_bpftime_create_main_conf,     /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_bpftime_create_loc_conf,      /* create location configuration */
    ngx_http_bpftime_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_bpftime_module = {
    NGX_MODULE_V1,
    &ngx_http_bpftime_module_ctx,          /* module context */
    ngx_http_bpftime_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_bpftime_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_bpftime_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* One server per worker process; workers are single-threaded. */
static bpftime_server  *ngx_http_bpftime_server;


static ngx_int_t
ngx_http_bpftime_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_http_bpftime_loc_conf_t   *blcf;
    struct bpftime_nginx_request   req;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bpftime_module);

    if (!blcf->url_filter) {
        return NGX_DECLINED;
    }

    if (ngx_http_bpftime_server == NULL) {
        /* creation failed in init_process and was logged there */
        return ngx_http_bpftime_failed(r, blcf, -ENODEV);
    }

    ngx_http_bpftime_fill(r, &req);

    rc = bpftime_server__filter_request(ngx_http_bpftime_server, &req);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "bpftime url filter: \"%V\" -> %i", &r->uri, rc);

    if (rc == BPFTIME_NGINX_ACCEPT) {
        return NGX_DECLINED;
    }

    if (rc < 0) {
        return ngx_http_bpftime_failed(r, blcf, rc);
    }

    /* a refusal: the status bpftime_nginx_status() gave (400..599) */
    return rc;
}


static ngx_int_t
ngx_http_bpftime_failed(ngx_http_request_t *r,
    ngx_http_bpftime_loc_conf_t *blcf, ngx_int_t rc)
{
    /*
     * No per-request log at error level: the server library reports each
     * distinct problem once through ngx_http_bpftime_log().
     */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "bpftime url filter failed (%i: %s), failing %s", rc,
                   ngx_http_bpftime_server
                       ? bpftime_server__last_error(ngx_http_bpftime_server)
                       : "no server",
                   blcf->fail == NGX_HTTP_BPFTIME_FAIL_OPEN ? "open"
                                                            : "closed");

    /* counted against the link that failed, for bpftime list and metrics */
    if (ngx_http_bpftime_server) {
        (void) bpftime_server__count_fail_policy(ngx_http_bpftime_server,
                   blcf->fail == NGX_HTTP_BPFTIME_FAIL_OPEN);
    }

    if (blcf->fail == NGX_HTTP_BPFTIME_FAIL_OPEN) {
        return NGX_DECLINED;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


static void
ngx_http_bpftime_fill(ngx_http_request_t *r, struct bpftime_nginx_request *req)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    ngx_memzero(req, sizeof(struct bpftime_nginx_request));

    /* programs get valid pointers even for empty strings */

#define ngx_http_bpftime_str(field, s)                                       \
    req->field = (s).len ? (const char *) (s).data : "";                     \
    req->field##_len = (__u32) (s).len

    ngx_http_bpftime_str(path, r->uri);
    ngx_http_bpftime_str(uri, r->unparsed_uri);
    ngx_http_bpftime_str(method, r->method_name);

    /* the validated Host (lowercase, without the port), or empty */
    ngx_http_bpftime_str(host, r->headers_in.server);

    ngx_http_bpftime_str(client, r->connection->addr_text);

#undef ngx_http_bpftime_str

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        req->client_ipv4 = sin->sin_addr.s_addr;
        break;

#if (NGX_HAVE_INET6)

    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        ngx_memcpy(req->client_ipv6, sin6->sin6_addr.s6_addr, 16);

        /* an IPv4 client on a dual-stack socket is an IPv4 client too */
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            ngx_memcpy(&req->client_ipv4, &sin6->sin6_addr.s6_addr[12], 4);
        }

        break;

#endif
    }
}


static void
ngx_http_bpftime_log(void *user, int level, const char *message)
{
    ngx_uint_t  nlevel;

    switch (level) {

    case BPFTIME_LOG_ERROR:
        nlevel = NGX_LOG_ERR;
        break;

    case BPFTIME_LOG_WARN:
        nlevel = NGX_LOG_WARN;
        break;

    default:
        nlevel = NGX_LOG_INFO;
        break;
    }

    /* the library's messages already start with "bpftime: " */
    ngx_log_error(nlevel, (ngx_log_t *) user, 0, "%s",
                  message ? message : "");
}


static char *
ngx_http_bpftime_url_filter(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bpftime_loc_conf_t *blcf = conf;

    char                          *rv;
    ngx_http_bpftime_main_conf_t  *bmcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* workers create a server only when some location filters */
    if (blcf->url_filter) {
        bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_bpftime_module);
        bmcf->used = 1;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_bpftime_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_bpftime_main_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_bpftime_main_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->shm = { 0, NULL };
     *     conf->used = 0;
     */

    return conf;
}


static void *
ngx_http_bpftime_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_bpftime_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_bpftime_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->url_filter = NGX_CONF_UNSET;
    conf->fail = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_bpftime_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_bpftime_loc_conf_t  *prev = parent;
    ngx_http_bpftime_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->url_filter, prev->url_filter, 0);
    ngx_conf_merge_uint_value(conf->fail, prev->fail,
                              NGX_HTTP_BPFTIME_FAIL_CLOSED);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_bpftime_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_http_bpftime_main_conf_t  *bmcf;

    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_bpftime_module);

    if (!bmcf->used) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_bpftime_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_bpftime_init_process(ngx_cycle_t *cycle)
{
    int                            rc;
    char                          *name;
    ngx_http_bpftime_main_conf_t  *bmcf;

    ngx_http_bpftime_server = NULL;

    /* the cache manager and loader serve no requests */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    bmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_bpftime_module);

    if (bmcf == NULL || !bmcf->used) {
        return NGX_OK;
    }

    name = NULL;

    if (bmcf->shm.len) {
        name = ngx_pnalloc(cycle->pool, bmcf->shm.len + 1);
        if (name == NULL) {
            return NGX_ERROR;
        }

        (void) ngx_cpystrn((u_char *) name, bmcf->shm.data, bmcf->shm.len + 1);
    }

    rc = bpftime_server__create(name, ngx_http_bpftime_log, cycle->log,
                                &ngx_http_bpftime_server);

    if (rc < 0) {
        /* requests then follow "bpftime_fail"; the worker keeps serving */
        ngx_log_error(NGX_LOG_ALERT, cycle->log, -rc,
                      "bpftime: cannot create the server for segment \"%s\"",
                      name ? name : "(default)");
        ngx_http_bpftime_server = NULL;
        return NGX_OK;
    }

    /*
     * Attach now rather than on the first request; a failure here was
     * logged by the library and is retried on every request.
     */
    (void) bpftime_server__instantiate(ngx_http_bpftime_server);

    return NGX_OK;
}


static void
ngx_http_bpftime_exit_process(ngx_cycle_t *cycle)
{
    bpftime_server__destroy(ngx_http_bpftime_server);
    ngx_http_bpftime_server = NULL;
}
