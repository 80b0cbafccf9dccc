/*
 * containerd-shim-lcow-v1.exe (and lcowctl.exe): containerd for Windows starts `containerd-shim-<name>.exe` from
 * its PATH, and the shim is a Node program. This launcher runs
 *     node.exe <dir of this exe>\..\dist\shim\<this exe's name>.js <the same arguments>
 * with the same standard handles, current directory and environment, waits, and exits with node's exit code.
 * node.exe: %LCOW_NODE% if set, else node.exe next to this exe, else the first node.exe on PATH.
 *
 * The arguments are passed through exactly: they are re-quoted by the rules CommandLineToArgvW and the C
 * runtime use to split a command line (Microsoft Learn, "Parsing C++ command-line arguments"), which
 * lcow_quote_arg implements. That function is plain C and is unit-tested on Linux (test/unit/shim).
 *
 * Build: x86_64-w64-mingw32-gcc -municode -O2 -Wall -Wextra -Werror -o containerd-shim-lcow-v1.exe launcher.c
 * (`make windows`). Never run on Windows by this project's CI.
 */
#include <stddef.h>
#include <stdio.h>
#include <wchar.h>

/*
 * Appends `arg`, quoted for a Windows command line, to out (capacity cap wide chars, NUL-terminated). Returns the
 * new length, or (size_t)-1 when it does not fit. Quotes only when needed (empty, space, tab, newline, quote);
 * inside quotes, backslashes are doubled only when they precede a quote or the closing quote.
 */
size_t lcow_quote_arg(const wchar_t *arg, wchar_t *out, size_t len, size_t cap) {
#define PUT(c)                                                                                                          \
  do {                                                                                                                 \
    if (len + 1 >= cap) return (size_t)-1;                                                                             \
    out[len++] = (c);                                                                                                  \
  } while (0)
  int needs = arg[0] == L'\0';
  for (const wchar_t *p = arg; *p; p++)
    if (*p == L' ' || *p == L'\t' || *p == L'\n' || *p == L'\v' || *p == L'"') needs = 1;
  if (!needs) {
    for (const wchar_t *p = arg; *p; p++) PUT(*p);
    out[len] = L'\0';
    return len;
  }
  PUT(L'"');
  for (const wchar_t *p = arg;; p++) {
    size_t backslashes = 0;
    while (*p == L'\\') {
      p++;
      backslashes++;
    }
    if (*p == L'\0') {
      /* Before the closing quote every backslash is doubled. */
      for (size_t i = 0; i < backslashes * 2; i++) PUT(L'\\');
      break;
    }
    if (*p == L'"') {
      for (size_t i = 0; i < backslashes * 2 + 1; i++) PUT(L'\\');
      PUT(L'"');
    } else {
      for (size_t i = 0; i < backslashes; i++) PUT(L'\\');
      PUT(*p);
    }
  }
  PUT(L'"');
  out[len] = L'\0';
  return len;
#undef PUT
}

#ifdef _WIN32
#include <windows.h>
#include <shellapi.h>

#define CMDLINE_MAX 32767 /* CreateProcessW's limit, in wide chars */

static void die(const wchar_t *what) {
  fwprintf(stderr, L"containerd-shim-lcow launcher: %ls (error %lu)\n", what, GetLastError());
  ExitProcess(1);
}

int wmain(void) {
  static wchar_t self[MAX_PATH * 4], dir[MAX_PATH * 4], script[MAX_PATH * 4], node[MAX_PATH * 4], cmd[CMDLINE_MAX];
  DWORD n = GetModuleFileNameW(NULL, self, (DWORD)(sizeof self / sizeof self[0]));
  if (n == 0 || n >= sizeof self / sizeof self[0]) die(L"cannot find its own path");
  wcscpy(dir, self);
  wchar_t *slash = wcsrchr(dir, L'\\');
  if (!slash) die(L"unexpected own path");
  *slash = L'\0';
  const wchar_t *name = self + (slash - dir) + 1;
  wchar_t base[MAX_PATH];
  if (wcslen(name) >= MAX_PATH) die(L"name too long");
  wcscpy(base, name);
  wchar_t *dot = wcsrchr(base, L'.');
  if (dot && _wcsicmp(dot, L".exe") == 0) *dot = L'\0';
  if (_snwprintf(script, sizeof script / sizeof script[0], L"%ls\\..\\dist\\shim\\%ls.js", dir, base) < 0)
    die(L"script path too long");

  DWORD e = GetEnvironmentVariableW(L"LCOW_NODE", node, (DWORD)(sizeof node / sizeof node[0]));
  if (e == 0 || e >= sizeof node / sizeof node[0]) {
    if (_snwprintf(node, sizeof node / sizeof node[0], L"%ls\\node.exe", dir) < 0) die(L"node path too long");
    if (GetFileAttributesW(node) == INVALID_FILE_ATTRIBUTES &&
        SearchPathW(NULL, L"node.exe", NULL, (DWORD)(sizeof node / sizeof node[0]), node, NULL) == 0)
      die(L"node.exe not found (set LCOW_NODE, or put node.exe on PATH)");
  }

  int argc = 0;
  wchar_t **argv = CommandLineToArgvW(GetCommandLineW(), &argc);
  if (!argv) die(L"cannot parse its command line");
  size_t len = 0;
  cmd[0] = L'\0';
  len = lcow_quote_arg(node, cmd, len, CMDLINE_MAX);
  if (len != (size_t)-1 && len + 1 < CMDLINE_MAX) cmd[len++] = L' ';
  if (len != (size_t)-1) len = lcow_quote_arg(script, cmd, len, CMDLINE_MAX);
  for (int i = 1; i < argc && len != (size_t)-1; i++) {
    if (len + 1 >= CMDLINE_MAX) {
      len = (size_t)-1;
      break;
    }
    cmd[len++] = L' ';
    len = lcow_quote_arg(argv[i], cmd, len, CMDLINE_MAX);
  }
  LocalFree(argv);
  if (len == (size_t)-1) die(L"command line too long");

  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  ZeroMemory(&si, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  if (!CreateProcessW(node, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) die(L"cannot start node.exe");
  CloseHandle(pi.hThread);
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 1;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  return (int)code;
}
#endif
