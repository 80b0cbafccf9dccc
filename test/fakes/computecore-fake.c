/*
 * FAKE computecore.dll (plus kernel32's LocalFree) for Linux unit tests. It implements the HCS API exports that
 * src/sandbox/hcs/computecore.ts binds, with the signatures and behaviour documented on Microsoft Learn
 * ("Host Compute System API reference": HcsCreateOperation ... HcsCloseOperation, HCS_EVENT, HCS_EVENT_CALLBACK),
 * so the real koffi binding, its threading and the operation/exit logic above it run unchanged:
 *
 *  - Calls that take an HCS_OPERATION return at once and complete on another thread; HcsWaitForOperationResult
 *    waits with a timeout (HCS_E_OPERATION_TIMEOUT), hands out the result document allocated for LocalFree,
 *    and returns the operation's HRESULT; HcsCancelOperation ends a running operation (ERROR_CANCELLED).
 *  - Events (HcsEventSystemExited with {"Status":..,"ExitType":..}) are delivered on a separate thread to every
 *    open handle's callback; HcsCloseComputeSystem waits until no callback on that handle is running (no event
 *    fires after it returns), as documented.
 *  - A system with ShouldTerminateOnLastHandleClosed ends when its last handle closes; a stopped system is
 *    forgotten once its last handle is closed (HcsOpenComputeSystem then fails with HCS_E_SYSTEM_NOT_FOUND).
 *  - Strings are UTF-16 (PCWSTR); documents must be JSON objects naming SchemaVersion and VirtualMachine.
 *
 * Test controls (fake_* exports) set delays and failures, read back what was sent, and count leaks.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef uint16_t WCHAR;
typedef int32_t HRESULT;
#define S_OK 0
#define E_INVALIDARG ((HRESULT)0x80070057)
#define E_POINTER ((HRESULT)0x80004003)
#define ERROR_CANCELLED_HR ((HRESULT)0x800704C7)
#define HCS_E_INVALID_STATE ((HRESULT)0x80370105)
#define HCS_E_INVALID_JSON ((HRESULT)0x8037010D)
#define HCS_E_SYSTEM_NOT_FOUND ((HRESULT)0x8037010E)
#define HCS_E_SYSTEM_ALREADY_EXISTS ((HRESULT)0x8037010F)
#define HCS_E_SYSTEM_ALREADY_STOPPED ((HRESULT)0x80370110)
#define HCS_E_OPERATION_NOT_STARTED ((HRESULT)0x80370115)
#define HCS_E_OPERATION_ALREADY_STARTED ((HRESULT)0x80370116)
#define HCS_E_OPERATION_TIMEOUT ((HRESULT)0x80370118)
#define HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET ((HRESULT)0x80370119)

#define HcsEventSystemExited 0x00000001u

typedef struct HCS_EVENT {
  uint32_t Type;
  const WCHAR *EventData;
  void *Operation;
} HCS_EVENT;
typedef void (*HCS_EVENT_CALLBACK)(HCS_EVENT *event, void *context);

enum { SYS_CREATED, SYS_RUNNING, SYS_STOPPED };
enum { OP_NEW, OP_RUNNING, OP_DONE };
enum { K_CREATE, K_START, K_SHUTDOWN, K_TERMINATE, K_MODIFY, K_PROPERTIES };

struct sys;
typedef struct handle {
  struct sys *sys;
  HCS_EVENT_CALLBACK cb;
  void *ctx;
  /* closing: no new callbacks, close waits for the running one; closed: released (still counted until then). */
  int closing;
  int closed;
  int in_callback;
  struct handle *next;
} handle;

typedef struct sys {
  char id[256];
  char runtime_id[40];
  int state;
  int terminate_on_close;
  char *document;
  char *last_modify;
  int modify_count;
  /* Operations and exit jobs still using this system: it is freed only when none is left. */
  int refs;
  handle *handles;
  struct sys *next;
} sys;

typedef struct op {
  int state;
  int refs;
  int cancelled;
  HRESULT hr;
  char *result;
  int kind;
  sys *sys;
  char *arg;
} op;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static sys *systems;
static int next_runtime = 1;
static int ops_open, handles_open, allocs_outstanding, cancels, grants, events_in_flight, modifies;
static int op_delay_ms = 1, start_hangs, exit_after_start_ms = -1, shutdown_works = 1, exit_delay_ms = 5;
static HRESULT fail_create_hr, fail_start_hr, fail_modify_hr;
static long long memory_private_bytes = 123456789;

/* ---- UTF-16 <-> UTF-8 ---- */

static char *from_wide(const WCHAR *w) {
  if (!w) return NULL;
  size_t n = 0;
  while (w[n]) n++;
  char *out = malloc(n * 3 + 1), *o = out;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = w[i];
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < n && w[i + 1] >= 0xdc00 && w[i + 1] < 0xe000)
      c = 0x10000 + ((c - 0xd800) << 10) + (w[++i] - 0xdc00);
    if (c < 0x80) *o++ = (char)c;
    else if (c < 0x800) *o++ = (char)(0xc0 | c >> 6), *o++ = (char)(0x80 | (c & 0x3f));
    else if (c < 0x10000)
      *o++ = (char)(0xe0 | c >> 12), *o++ = (char)(0x80 | (c >> 6 & 0x3f)), *o++ = (char)(0x80 | (c & 0x3f));
    else
      *o++ = (char)(0xf0 | c >> 18), *o++ = (char)(0x80 | (c >> 12 & 0x3f)), *o++ = (char)(0x80 | (c >> 6 & 0x3f)),
      *o++ = (char)(0x80 | (c & 0x3f));
  }
  *o = 0;
  return out;
}

/* A UTF-16 copy for the caller, to be released with LocalFree (ASCII documents only: ours are). */
static WCHAR *to_wide_alloc(const char *s) {
  size_t n = strlen(s);
  WCHAR *w = malloc((n + 1) * sizeof(WCHAR));
  for (size_t i = 0; i <= n; i++) w[i] = (unsigned char)s[i];
  allocs_outstanding++;
  return w;
}

void *LocalFree(void *mem) {
  if (mem) {
    pthread_mutex_lock(&mu);
    allocs_outstanding--;
    pthread_mutex_unlock(&mu);
    free(mem);
  }
  return NULL;
}

/* ---- helpers (mu held) ---- */

static sys *find_sys(const char *id) {
  for (sys *s = systems; s; s = s->next)
    if (strcmp(s->id, id) == 0) return s;
  return NULL;
}

static int live_handles(sys *s) {
  int n = 0;
  for (handle *h = s->handles; h; h = h->next)
    if (!h->closed) n++;
  return n;
}

static void forget_sys(sys *s) {
  for (sys **p = &systems; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  for (handle *h = s->handles; h;) {
    handle *n = h->next;
    free(h);
    h = n;
  }
  free(s->document);
  free(s->last_modify);
  free(s);
}

/* mu held: a stopped system nobody references any more is forgotten, as HCS forgets it. */
static void maybe_forget(sys *s) {
  if (s->refs == 0 && live_handles(s) == 0 && s->state == SYS_STOPPED) forget_sys(s);
}

static void op_unref(op *o) {
  if (--o->refs == 0) {
    free(o->result);
    free(o->arg);
    free(o);
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- events ---- */

typedef struct {
  sys *s;
  char *data;
  int delay_ms;
} exit_job;

static void *exit_thread(void *arg) {
  exit_job *j = arg;
  sleep_ms(j->delay_ms);
  pthread_mutex_lock(&mu);
  sys *s = j->s;
  if (s->state == SYS_STOPPED) goto out; /* a second stop request: one exit event */
  s->state = SYS_STOPPED;
  WCHAR *w = to_wide_alloc(j->data);
  allocs_outstanding--; /* owned by us, freed below */
  for (handle *h = s->handles; h; h = h->next) {
    if (h->closed || h->closing || !h->cb) continue;
    h->in_callback++;
    HCS_EVENT_CALLBACK cb = h->cb;
    void *ctx = h->ctx;
    pthread_mutex_unlock(&mu);
    HCS_EVENT ev = {HcsEventSystemExited, w, NULL};
    cb(&ev, ctx);
    pthread_mutex_lock(&mu);
    h->in_callback--;
    pthread_cond_broadcast(&cv);
  }
  free(w);
out:
  s->refs--;
  maybe_forget(s);
  events_in_flight--;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  free(j->data);
  free(j);
  return NULL;
}

/* mu held. */
static void schedule_exit(sys *s, const char *exit_type, int status, int delay_ms) {
  exit_job *j = malloc(sizeof(*j));
  j->s = s;
  s->refs++;
  j->delay_ms = delay_ms;
  j->data = malloc(96);
  snprintf(j->data, 96, "{\"Status\":%d,\"ExitType\":\"%s\"}", status, exit_type);
  events_in_flight++;
  pthread_t t;
  pthread_create(&t, NULL, exit_thread, j);
  pthread_detach(t);
}

/* ---- operations ---- */

static void complete(op *o, HRESULT hr, const char *result) {
  o->hr = hr;
  o->result = result ? strdup(result) : NULL;
  o->state = OP_DONE;
  pthread_cond_broadcast(&cv);
}

static void *op_thread(void *arg) {
  op *o = arg;
  sleep_ms(op_delay_ms);
  pthread_mutex_lock(&mu);
  if (o->kind == K_START && start_hangs) {
    while (!o->cancelled) pthread_cond_wait(&cv, &mu);
  }
  sys *s = o->sys;
  if (o->cancelled) {
    complete(o, ERROR_CANCELLED_HR, NULL);
    goto done;
  }
  char buf[1024];
  switch (o->kind) {
  case K_CREATE:
    complete(o, S_OK, NULL);
    break;
  case K_START:
    if (fail_start_hr) {
      snprintf(buf, sizeof buf, "{\"Error\":%d,\"ErrorMessage\":\"The virtual machine could not be started.\"}",
               fail_start_hr);
      complete(o, fail_start_hr, buf);
    } else if (s->state != SYS_CREATED) {
      complete(o, HCS_E_INVALID_STATE, NULL);
    } else {
      s->state = SYS_RUNNING;
      if (exit_after_start_ms >= 0) schedule_exit(s, "UnexpectedExit", (int)0x80370106, exit_after_start_ms);
      complete(o, S_OK, NULL);
    }
    break;
  case K_SHUTDOWN:
  case K_TERMINATE:
    if (s->state == SYS_STOPPED) {
      complete(o, HCS_E_SYSTEM_ALREADY_STOPPED, NULL);
    } else {
      if (o->kind == K_TERMINATE) schedule_exit(s, "ForcedExit", 0, exit_delay_ms);
      else if (shutdown_works) schedule_exit(s, "GracefulExit", 0, exit_delay_ms);
      complete(o, S_OK, NULL);
    }
    break;
  case K_MODIFY:
    free(s->last_modify);
    s->last_modify = strdup(o->arg);
    s->modify_count++;
    modifies++;
    if (fail_modify_hr) complete(o, fail_modify_hr, "{\"Error\":-1,\"ErrorMessage\":\"fake: modify refused\"}");
    else complete(o, S_OK, NULL);
    break;
  case K_PROPERTIES: {
    const char *state = s->state == SYS_RUNNING ? "Running" : s->state == SYS_STOPPED ? "Stopped" : "Created";
    if (o->arg && strstr(o->arg, "Statistics"))
      snprintf(buf, sizeof buf,
               "{\"Id\":\"%s\",\"SystemType\":\"VirtualMachine\",\"RuntimeId\":\"%s\",\"State\":\"%s\","
               "\"Statistics\":{\"Uptime100ns\":1000,\"Memory\":{\"MemoryUsageCommitBytes\":%lld,"
               "\"MemoryUsagePrivateWorkingSetBytes\":%lld}}}",
               s->id, s->runtime_id, state, memory_private_bytes * 2, memory_private_bytes);
    else
      snprintf(buf, sizeof buf,
               "{\"Id\":\"%s\",\"SystemType\":\"VirtualMachine\",\"RuntimeId\":\"%s\",\"State\":\"%s\","
               "\"Stopped\":%s}",
               s->id, s->runtime_id, state, s->state == SYS_STOPPED ? "true" : "false");
    complete(o, S_OK, buf);
    break;
  }
  }
done:
  o->sys = NULL;
  s->refs--;
  maybe_forget(s);
  op_unref(o);
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* mu held. Starts `o` on its own thread. */
static HRESULT begin(op *o, int kind, sys *s, const char *arg) {
  if (!o) return E_INVALIDARG;
  if (o->state != OP_NEW) return HCS_E_OPERATION_ALREADY_STARTED;
  o->state = OP_RUNNING;
  o->kind = kind;
  o->sys = s;
  s->refs++;
  o->arg = arg ? strdup(arg) : NULL;
  o->refs++;
  pthread_t t;
  pthread_create(&t, NULL, op_thread, o);
  pthread_detach(t);
  return S_OK;
}

void *HcsCreateOperation(const void *context, void *callback) {
  (void)context;
  if (callback) return NULL; /* the binding never asks for operation callbacks */
  op *o = calloc(1, sizeof(op));
  o->refs = 1;
  pthread_mutex_lock(&mu);
  ops_open++;
  pthread_mutex_unlock(&mu);
  return o;
}

void HcsCloseOperation(void *operation) {
  if (!operation) return;
  pthread_mutex_lock(&mu);
  ops_open--;
  op_unref(operation);
  pthread_mutex_unlock(&mu);
}

HRESULT HcsWaitForOperationResult(void *operation, uint32_t timeoutMs, WCHAR **resultDocument) {
  op *o = operation;
  if (!o) return E_INVALIDARG;
  if (resultDocument) *resultDocument = NULL;
  pthread_mutex_lock(&mu);
  if (o->state == OP_NEW) {
    pthread_mutex_unlock(&mu);
    return HCS_E_OPERATION_NOT_STARTED;
  }
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeoutMs / 1000;
  deadline.tv_nsec += (long)(timeoutMs % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
  while (o->state != OP_DONE)
    if (pthread_cond_timedwait(&cv, &mu, &deadline) != 0 && o->state != OP_DONE) {
      pthread_mutex_unlock(&mu);
      return HCS_E_OPERATION_TIMEOUT;
    }
  HRESULT hr = o->hr;
  if (resultDocument && o->result) *resultDocument = to_wide_alloc(o->result);
  pthread_mutex_unlock(&mu);
  return hr;
}

HRESULT HcsCancelOperation(void *operation) {
  op *o = operation;
  if (!o) return E_INVALIDARG;
  pthread_mutex_lock(&mu);
  HRESULT hr = o->state == OP_RUNNING ? S_OK : HCS_E_OPERATION_NOT_STARTED;
  if (o->state == OP_RUNNING) {
    o->cancelled = 1;
    cancels++;
    pthread_cond_broadcast(&cv);
  }
  pthread_mutex_unlock(&mu);
  return hr;
}

HRESULT HcsCreateComputeSystem(const WCHAR *id, const WCHAR *configuration, void *operation,
                               const void *securityDescriptor, void **computeSystem) {
  (void)securityDescriptor;
  if (!id || !configuration || !computeSystem) return E_POINTER;
  *computeSystem = NULL;
  char *cid = from_wide(id), *doc = from_wide(configuration);
  HRESULT hr = S_OK;
  pthread_mutex_lock(&mu);
  if (!cid[0] || strlen(cid) >= sizeof(((sys *)0)->id)) hr = E_INVALIDARG;
  else if (doc[0] != '{' || !strstr(doc, "\"SchemaVersion\"") || !strstr(doc, "\"VirtualMachine\"")) hr = HCS_E_INVALID_JSON;
  else if (find_sys(cid)) hr = HCS_E_SYSTEM_ALREADY_EXISTS;
  else if (fail_create_hr) hr = fail_create_hr;
  if (hr == S_OK) {
    sys *s = calloc(1, sizeof(sys));
    strcpy(s->id, cid);
    snprintf(s->runtime_id, sizeof s->runtime_id, "%08x-fa4e-4d1c-9a3b-%012x", 0x5eed0000u + (unsigned)next_runtime,
             (unsigned)next_runtime);
    next_runtime++;
    s->state = SYS_CREATED;
    s->terminate_on_close = strstr(doc, "\"ShouldTerminateOnLastHandleClosed\":true") != NULL;
    s->document = doc;
    doc = NULL;
    handle *h = calloc(1, sizeof(handle));
    h->sys = s;
    s->handles = h;
    s->next = systems;
    systems = s;
    handles_open++;
    hr = begin(operation, K_CREATE, s, NULL);
    *computeSystem = h;
  }
  pthread_mutex_unlock(&mu);
  free(cid);
  free(doc);
  return hr;
}

HRESULT HcsOpenComputeSystem(const WCHAR *id, uint32_t requestedAccess, void **computeSystem) {
  (void)requestedAccess;
  if (!id || !computeSystem) return E_POINTER;
  *computeSystem = NULL;
  char *cid = from_wide(id);
  pthread_mutex_lock(&mu);
  sys *s = find_sys(cid);
  HRESULT hr = HCS_E_SYSTEM_NOT_FOUND;
  if (s) {
    handle *h = calloc(1, sizeof(handle));
    h->sys = s;
    h->next = s->handles;
    s->handles = h;
    handles_open++;
    *computeSystem = h;
    hr = S_OK;
  }
  pthread_mutex_unlock(&mu);
  free(cid);
  return hr;
}

void HcsCloseComputeSystem(void *computeSystem) {
  handle *h = computeSystem;
  if (!h) return;
  pthread_mutex_lock(&mu);
  h->closing = 1;
  /* The handle stays live (the system cannot be forgotten) until its running callback returned. */
  while (h->in_callback) pthread_cond_wait(&cv, &mu);
  h->closed = 1;
  handles_open--;
  sys *s = h->sys;
  if (live_handles(s) == 0 && s->state != SYS_STOPPED && s->terminate_on_close) s->state = SYS_STOPPED;
  maybe_forget(s);
  pthread_mutex_unlock(&mu);
}

static HRESULT system_call(void *computeSystem, void *operation, int kind, const WCHAR *arg) {
  handle *h = computeSystem;
  if (!h || h->closed) return E_INVALIDARG;
  char *a = from_wide(arg);
  pthread_mutex_lock(&mu);
  HRESULT hr = begin(operation, kind, h->sys, a);
  pthread_mutex_unlock(&mu);
  free(a);
  return hr;
}

HRESULT HcsStartComputeSystem(void *cs, void *op, const WCHAR *options) { return system_call(cs, op, K_START, options); }
HRESULT HcsShutDownComputeSystem(void *cs, void *op, const WCHAR *options) {
  return system_call(cs, op, K_SHUTDOWN, options);
}
HRESULT HcsTerminateComputeSystem(void *cs, void *op, const WCHAR *options) {
  return system_call(cs, op, K_TERMINATE, options);
}
HRESULT HcsGetComputeSystemProperties(void *cs, void *op, const WCHAR *query) {
  return system_call(cs, op, K_PROPERTIES, query);
}

HRESULT HcsModifyComputeSystem(void *cs, void *op, const WCHAR *configuration, void *identity) {
  (void)identity;
  if (!configuration) return E_POINTER;
  return system_call(cs, op, K_MODIFY, configuration);
}

HRESULT HcsSetComputeSystemCallback(void *computeSystem, uint32_t callbackOptions, const void *context,
                                    HCS_EVENT_CALLBACK callback) {
  handle *h = computeSystem;
  if (!h || h->closed || callbackOptions != 0) return E_INVALIDARG;
  pthread_mutex_lock(&mu);
  HRESULT hr = h->cb ? HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET : S_OK;
  if (hr == S_OK) {
    h->cb = callback;
    h->ctx = (void *)context;
  }
  pthread_mutex_unlock(&mu);
  return hr;
}

HRESULT HcsGrantVmAccess(const WCHAR *vmId, const WCHAR *filePath) {
  if (!vmId || !filePath) return E_POINTER;
  pthread_mutex_lock(&mu);
  grants++;
  pthread_mutex_unlock(&mu);
  return S_OK;
}

/* ---- test controls ---- */

void fake_hcs_set(const char *name, long long value) {
  pthread_mutex_lock(&mu);
  if (!strcmp(name, "op_delay_ms")) op_delay_ms = (int)value;
  else if (!strcmp(name, "start_hangs")) start_hangs = (int)value;
  else if (!strcmp(name, "exit_after_start_ms")) exit_after_start_ms = (int)value;
  else if (!strcmp(name, "shutdown_works")) shutdown_works = (int)value;
  else if (!strcmp(name, "exit_delay_ms")) exit_delay_ms = (int)value;
  else if (!strcmp(name, "fail_create_hr")) fail_create_hr = (HRESULT)value;
  else if (!strcmp(name, "fail_start_hr")) fail_start_hr = (HRESULT)value;
  else if (!strcmp(name, "fail_modify_hr")) fail_modify_hr = (HRESULT)value;
  else if (!strcmp(name, "memory_private_bytes")) memory_private_bytes = value;
  else fprintf(stderr, "computecore-fake: unknown setting %s\n", name);
  pthread_mutex_unlock(&mu);
}

/* Defaults back; systems are kept (tests clean up through the API). */
void fake_hcs_reset_settings(void) {
  pthread_mutex_lock(&mu);
  op_delay_ms = 1, start_hangs = 0, exit_after_start_ms = -1, shutdown_works = 1, exit_delay_ms = 5;
  fail_create_hr = fail_start_hr = fail_modify_hr = 0;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

long long fake_hcs_count(const char *what) {
  pthread_mutex_lock(&mu);
  long long v = -1;
  if (!strcmp(what, "operations")) v = ops_open;
  else if (!strcmp(what, "handles")) v = handles_open;
  else if (!strcmp(what, "allocations")) v = allocs_outstanding;
  else if (!strcmp(what, "cancels")) v = cancels;
  else if (!strcmp(what, "grants")) v = grants;
  else if (!strcmp(what, "modifies")) v = modifies;
  else if (!strcmp(what, "events")) v = events_in_flight;
  else if (!strcmp(what, "systems")) {
    v = 0;
    for (sys *s = systems; s; s = s->next) v++;
  }
  pthread_mutex_unlock(&mu);
  return v;
}

/* "created", "running", "stopped" or "" (unknown id). */
const char *fake_hcs_state(const char *id) {
  pthread_mutex_lock(&mu);
  sys *s = find_sys(id);
  const char *r = !s ? "" : s->state == SYS_RUNNING ? "running" : s->state == SYS_STOPPED ? "stopped" : "created";
  pthread_mutex_unlock(&mu);
  return r;
}

/* Copies what the system was created with ("document"), its last modify request ("modify"), its VM id. */
int fake_hcs_read(const char *id, const char *what, char *buf, int len) {
  pthread_mutex_lock(&mu);
  sys *s = find_sys(id);
  const char *src = !s ? NULL
                    : !strcmp(what, "document") ? s->document
                    : !strcmp(what, "modify")   ? s->last_modify
                    : !strcmp(what, "runtime")  ? s->runtime_id
                                                : NULL;
  int n = -1;
  if (src && (int)strlen(src) < len) {
    strcpy(buf, src);
    n = (int)strlen(src);
  }
  pthread_mutex_unlock(&mu);
  return n;
}

/* The guest powered itself off (or crashed): the exit event fires as HCS would send it. */
int fake_hcs_guest_exit(const char *id, const char *exit_type) {
  pthread_mutex_lock(&mu);
  sys *s = find_sys(id);
  int ok = s && s->state == SYS_RUNNING;
  if (ok) schedule_exit(s, exit_type, 0, 1);
  pthread_mutex_unlock(&mu);
  return ok;
}
