// Crash: a writer process is killed with SIGKILL at random moments; every
// batch it reported as acknowledged is in the store after reopening.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>

#include "engine/engine.h"
#include "tests/test_util.h"

extern char** environ;

namespace mnemo::engine {
namespace {

using mnemo::testing::Iota;
using mnemo::testing::OptionsFor;
using mnemo::testing::TempDir;

constexpr uint64_t kBatch = 200;

// Runs the writer from `first_batch` for `run_for`, kills it with SIGKILL and
// returns the batches it acknowledged.
std::vector<uint64_t> RunAndKill(const std::string& dir, const std::string& index,
                                 uint64_t first_batch, std::chrono::milliseconds run_for) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  std::string first = std::to_string(first_batch), size = std::to_string(kBatch);
  const char* argv[] = {MNEMO_CRASH_WRITER, dir.c_str(), index.c_str(), first.c_str(),
                        size.c_str(), nullptr};
  pid_t pid;
  EXPECT_EQ(posix_spawn(&pid, MNEMO_CRASH_WRITER, &actions, nullptr,
                        const_cast<char**>(argv), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);

  std::string out;
  auto deadline = std::chrono::steady_clock::now() + run_for;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 5) > 0) {
      ssize_t n = read(fds[0], buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  // Lines already written before the kill were acknowledged too.
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) out.append(buf, size_t(n));
  close(fds[0]);
  EXPECT_TRUE(WIFSIGNALED(status)) << "writer exited early; output: " << out;

  std::vector<uint64_t> acked;
  size_t start = 0;
  for (size_t nl; (nl = out.find('\n', start)) != std::string::npos; start = nl + 1) {
    acked.push_back(std::stoull(out.substr(start, nl - start)));
  }
  return acked;
}

class CrashTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CrashTest, EveryAcknowledgedBatchSurvivesSigkill) {
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(200, 1500);
  uint64_t next_batch = 0;
  uint64_t acknowledged = 0;
  for (int round = 0; round < 5; ++round) {
    auto acked = RunAndKill(dir.path(), GetParam(), next_batch,
                            std::chrono::milliseconds(delay_ms(rng)));
    if (!acked.empty()) next_batch = acked.back() + 1;
    acknowledged += acked.size();

    auto engine = Engine::Open(OptionsFor(dir.path()));
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    auto c = (*engine)->GetCollection("crash");
    if (acked.empty() && !c.ok()) continue;  // killed before creating it
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    // Every acknowledged id so far is there, readable and searchable.
    const uint64_t total = next_batch * kBatch;
    if (total == 0) continue;
    std::vector<float> last;
    for (uint64_t at = 0; at < total; at += 100000) {  // Get takes bounded batches
      auto ids = Iota(std::min<uint64_t>(100000, total - at), at);
      auto found = (*c)->Get(ids);
      ASSERT_TRUE(found.ok()) << found.status().ToString();
      ASSERT_EQ(found->ids.size(), ids.size()) << "round " << round;
      last.assign(found->vectors.end() - 8, found->vectors.end());
    }
    EXPECT_GE((*c)->Stats().count, total);
    auto r = (*c)->Search({.queries = last, .k = 1, .nprobe = 64, .ef = 64});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_GE(r->ids[0], 0);
  }
  EXPECT_GT(acknowledged, 0u) << "the writer never acknowledged anything";
  std::printf("%s: %llu batches acknowledged over 5 kills\n", GetParam().c_str(),
              static_cast<unsigned long long>(acknowledged));
}

INSTANTIATE_TEST_SUITE_P(Indexes, CrashTest, ::testing::Values("Flat", "IVF16,Flat", "HNSW16"),
                         mnemo::testing::FactoryName());

}  // namespace
}  // namespace mnemo::engine
