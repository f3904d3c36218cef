// mnemod: the mnemo daemon. Serves the engine in --data-dir over the wire
// protocol (--listen) and an HTTP admin port (--http).
//
// Settings come from flags, or from a TOML file given with --config (flags
// win). SIGTERM and SIGINT stop it cleanly: it stops accepting, answers
// every request already read, then closes the store. On start it prints
//   mnemod listening on HOST:PORT (admin http HOST:PORT)
// on stdout once it serves, which scripts and tests wait for.
#include <CLI/CLI.hpp>

#include <optional>
#include <signal.h>
#include <sys/stat.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include <cstdio>

#include "engine/engine.h"
#include "net/admin_http.h"
#include "net/metrics.h"
#include "net/server.h"
#include "tools/describe.h"

namespace {

struct Settings {
  std::string data_dir;
  std::string backup_root;
  std::string listen = "127.0.0.1:7070";
  std::string http = "127.0.0.1:7071";
  bool sync_writes = false;
  std::string auth_file;
  std::string log_level = "info";
  mnemo::net::ServerOptions server;
  int64_t idle_timeout_s = 300;
  int64_t batch_window_us = 1000;
  double batch_window_fraction = 0.05;
  int64_t busy_poll_us = 50;
};

// Values from the TOML file, for the settings not given as flags.
mnemo::Status ApplyConfig(const std::string& path, const CLI::App& app, Settings* s) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return mnemo::Status::InvalidArgument("config '" + path + "': " + std::string(e.description()));
  }
  auto set = [&](const char* key, const char* flag, auto* field) {
    using T = std::remove_pointer_t<decltype(field)>;
    if (app.count(flag) > 0) return;
    if (auto v = t[key].value<T>()) *field = *v;
  };
  set("data_dir", "--data-dir", &s->data_dir);
  set("backup_root", "--backup-root", &s->backup_root);
  set("listen", "--listen", &s->listen);
  set("http", "--http", &s->http);
  set("sync_writes", "--sync-writes", &s->sync_writes);
  set("auth_file", "--auth-file", &s->auth_file);
  set("log_level", "--log-level", &s->log_level);
  set("idle_timeout_s", "--idle-timeout-s", &s->idle_timeout_s);
  set("batch_window_us", "--batch-window-us", &s->batch_window_us);
  set("batch_window_fraction", "--batch-window-fraction", &s->batch_window_fraction);
  set("busy_poll_us", "--busy-poll-us", &s->busy_poll_us);
  set("search_on_io", "--search-on-io", &s->server.search_on_io);
  int64_t v;
  auto set_size = [&](const char* key, const char* flag, size_t* field) {
    if (app.count(flag) == 0 && t[key].value<int64_t>()) {
      v = *t[key].value<int64_t>();
      *field = size_t(v);
    }
  };
  set_size("io_threads", "--io-threads", &s->server.io_threads);
  set_size("worker_threads", "--worker-threads", &s->server.worker_threads);
  set_size("max_connections", "--max-connections", &s->server.max_connections);
  set_size("batch_max_queries", "--batch-max-queries", &s->server.batching.max_queries);
  set_size("batch_concurrency", "--batch-concurrency", &s->server.batching.max_batches);
  if (app.count("--max-frame-bytes") == 0 && t["max_frame_bytes"].value<int64_t>()) {
    s->server.max_frame_bytes = uint32_t(*t["max_frame_bytes"].value<int64_t>());
  }
  if (app.count("--max-attachment-bytes") == 0 && t["max_attachment_bytes"].value<int64_t>()) {
    s->server.max_attachment_bytes = uint32_t(*t["max_attachment_bytes"].value<int64_t>());
  }
  return mnemo::Status::OK();
}

// The flags (and the --config file under them) into `s`; an exit code when
// the process should end now (2: bad usage; 0: --help).
std::optional<int> ParseSettings(int argc, char** argv, Settings* s, bool* check) {
  std::string config;
  CLI::App app{"mnemod: the mnemo memory daemon"};
  app.add_option("--data-dir", s->data_dir, "store directory");
  app.add_flag("--check", *check, "open the store in --data-dir, print its collections, close it and exit (0: it opens)");
  app.add_option("--backup-root", s->backup_root, "backups (mnemo backup DIR) only inside this directory");
  app.add_option("--listen", s->listen, "wire protocol address")->capture_default_str();
  app.add_option("--http", s->http, "admin HTTP address (healthz, metrics)")->capture_default_str();
  app.add_flag("--sync-writes", s->sync_writes, "sync the write-ahead log before each ack");
  app.add_option("--auth-file", s->auth_file, "TOML file of API keys, roles and collections (see net/key_ring.h)");
  app.add_option("--config", config, "TOML file with any of these settings");
  app.add_option("--log-level", s->log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--search-on-io", s->server.search_on_io,
                 "searches that batching does not speed up (HNSW, IVF, SQ) run on the I/O threads, one per core (false: on the workers)")
      ->capture_default_str();
  app.add_option("--io-threads", s->server.io_threads, "threads doing socket I/O (0: one per core with --search-on-io, else one per 8 cores, 1 to 4)");
  app.add_option("--worker-threads", s->server.worker_threads, "threads executing requests (0: one per core but one with --search-on-io, else one per core not doing I/O)");
  app.add_option("--max-connections", s->server.max_connections, "open connections at most")->capture_default_str();
  app.add_option("--max-frame-bytes", s->server.max_frame_bytes, "largest request FlatBuffer")->capture_default_str();
  app.add_option("--max-attachment-bytes", s->server.max_attachment_bytes,
                 "largest request attachment (the KV layers of one put_kv)")
      ->capture_default_str();
  app.add_option("--idle-timeout-s", s->idle_timeout_s, "close connections idle this long")->capture_default_str();
  app.add_option("--batch-window-us", s->batch_window_us, "longest wait to gather a search batch")->capture_default_str();
  app.add_option("--batch-window-fraction", s->batch_window_fraction, "wait this fraction of the last batch's run time (0: always --batch-window-us)")->capture_default_str();
  app.add_option("--busy-poll-us", s->busy_poll_us, "an idle I/O thread polls this long before it sleeps (0: never)")->capture_default_str();
  app.add_option("--batch-max-queries", s->server.batching.max_queries, "queries per search batch at most")->capture_default_str();
  app.add_option("--batch-concurrency", s->server.batching.max_batches, "search batches of one collection running at once (0: with --search-on-io one, split over every core, else one per worker thread)")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!config.empty()) {
    auto st = ApplyConfig(config, app, s);
    if (!st.ok()) {
      std::fprintf(stderr, "mnemod: %s\n", st.ToString().c_str());
      return 2;
    }
  }
  if (s->data_dir.empty()) {
    std::fprintf(stderr, "mnemod: --data-dir is required\n");
    return 2;
  }
  s->server.listen = s->listen;
  s->server.idle_timeout = std::chrono::seconds(s->idle_timeout_s);
  s->server.batching.max_window = std::chrono::microseconds(s->batch_window_us);
  s->server.batching.window_fraction = s->batch_window_fraction;
  s->server.busy_poll = std::chrono::microseconds(s->busy_poll_us);
  return std::nullopt;
}

mnemo::Result<std::unique_ptr<mnemo::engine::Engine>> OpenEngine(const Settings& s) {
  mnemo::engine::EngineOptions eo;
  eo.data_dir = s.data_dir;
  eo.backup_root = s.backup_root;
  eo.sync_writes = s.sync_writes;
  return mnemo::engine::Engine::Open(eo);
}

// --check: opens the store (recovering every index, as a start would),
// prints its collections and closes it.
int Check(const Settings& s) {
  auto engine = OpenEngine(s);
  if (!engine.ok()) {
    std::fprintf(stderr, "mnemod --check: '%s' does not open: %s\n", s.data_dir.c_str(),
                 engine.status().ToString().c_str());
    return 1;
  }
  for (const auto& c : (*engine)->ListCollections()) {
    std::printf("%s\n", mnemo::tools::DescribeCollection(c).c_str());
  }
  if (auto st = (*engine)->Close(); !st.ok()) {
    std::fprintf(stderr, "mnemod --check: closing '%s': %s\n", s.data_dir.c_str(), st.ToString().c_str());
    return 1;
  }
  return 0;
}

// Blocks the stop signals in every thread (the threads started later
// inherit the mask); the main thread waits for them in WaitForStop.
sigset_t BlockStopSignals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return stop_signals;
}

// Serves the engine until SIGTERM or SIGINT, then stops cleanly: no new
// connections, every request already read answered, the store closed.
int Serve(Settings& s, mnemo::engine::Engine& engine, const sigset_t& stop_signals) {
  mnemo::net::Metrics metrics;
  mnemo::net::Server server(&engine, &metrics, s.server);
  if (auto st = server.Start(); !st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  mnemo::net::AdminHttp admin(&engine, &metrics);
  if (auto st = admin.Start(s.http); !st.ok()) {
    spdlog::error("{}", st.ToString());
    server.Stop();
    server.Wait();
    return 1;
  }
  std::printf("mnemod listening on %s (admin http %s)\n", server.address().c_str(),
              admin.address().c_str());
  std::fflush(stdout);
  spdlog::info("serving {} collections from {}{}", engine.ListCollections().size(), s.data_dir,
               s.server.keys ? " with " + std::to_string(s.server.keys->size()) + " API keys"
                             : std::string());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: stopping", sig);
  admin.SetStopping();
  server.Stop();
  server.Wait();
  admin.Stop();
  if (auto st = engine.Close(); !st.ok()) {
    spdlog::error("closing the store: {}", st.ToString());
    return 1;
  }
  spdlog::info("stopped cleanly");
  return 0;
}

int Main(int argc, char** argv) {
  Settings s;
  bool check = false;
  if (auto exit_code = ParseSettings(argc, argv, &s, &check)) return *exit_code;
  // Logs go to stderr; stdout carries only the "listening" line.
  spdlog::set_default_logger(spdlog::stderr_color_mt("mnemod"));
  spdlog::set_level(spdlog::level::from_str(s.log_level));
  if (check) return Check(s);
  std::optional<mnemo::net::KeyRing> keys;
  if (!s.auth_file.empty()) {
    auto ring = mnemo::net::KeyRing::Load(s.auth_file);
    if (!ring.ok()) {
      std::fprintf(stderr, "mnemod: %s\n", ring.status().ToString().c_str());
      return 2;
    }
    keys = std::move(ring).value();
    s.server.keys = &*keys;
  }
  // The store's files (vectors, payloads, KV) are the daemon user's alone:
  // 0600 files and 0700 directories, whatever the shell's umask. Same-host
  // clients run as that user.
  ::umask(0077);
  const sigset_t stop_signals = BlockStopSignals();
  auto engine = OpenEngine(s);
  if (!engine.ok()) {
    spdlog::error("cannot open the store: {}", engine.status().ToString());
    return 1;
  }
  return Serve(s, **engine, stop_signals);
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
