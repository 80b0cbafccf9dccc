// What Jenkins does to JENKINS_HOME, without Jenkins (Debian does not package it): an exclusive FileChannel
// lock on the home for the controller's lifetime (checked from a second JVM), configuration written the
// AtomicFileWriter way (temp file, force, ATOMIC_MOVE over the old one), many small build records, a
// WatchService on the home that must see files another process creates, and a manifest of SHA-256 sums
// that a later run (a new container) verifies.
//
//   java -cp /opt/lcow Workload write HOME JOBS BUILDS   prints "lock held-elsewhere", "watch ok N", "wrote N"
//   java -cp /opt/lcow Workload verify HOME              prints "verified N"
//   java -cp /opt/lcow Workload probe HOME               prints "probe free" or "probe held-elsewhere"
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.MessageDigest;
import java.util.*;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

public class Workload {
  public static void main(String[] args) throws Exception {
    Path home = Paths.get(args[1]);
    switch (args[0]) {
      case "write" -> write(home, Integer.parseInt(args[2]), Integer.parseInt(args[3]));
      case "verify" -> System.out.println("verified " + verify(home));
      case "probe" -> System.out.println("probe " + probe(home));
      default -> throw new IllegalArgumentException(args[0]);
    }
  }

  static FileChannel lockChannel(Path home) throws IOException {
    return FileChannel.open(home.resolve(".owner"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
  }

  static String probe(Path home) throws IOException {
    try (FileChannel ch = lockChannel(home); FileLock l = ch.tryLock()) {
      return l == null ? "held-elsewhere" : "free";
    }
  }

  /** A second JVM, as a second Jenkins started on the same home would be. */
  static String probeFromAnotherProcess(Path home) throws Exception {
    Process p = new ProcessBuilder(Paths.get(System.getProperty("java.home"), "bin", "java").toString(),
        "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", System.getProperty("java.class.path"), "Workload", "probe",
        home.toString()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
    if (p.waitFor() != 0) throw new IOException("probe failed: " + out);
    return out;
  }

  /** AtomicFileWriter: write a temp file beside the target, force it, rename it over the target. */
  static void atomicWrite(Path target, String content) throws IOException {
    Path tmp = Files.createTempFile(target.getParent(), target.getFileName().toString(), ".tmp");
    try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
      ByteBuffer b = ByteBuffer.wrap(content.getBytes(StandardCharsets.UTF_8));
      while (b.hasRemaining()) ch.write(b);
      ch.force(true);
    }
    Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
  }

  static void write(Path home, int jobs, int builds) throws Exception {
    Files.createDirectories(home.resolve("jobs"));
    try (FileChannel ch = lockChannel(home); FileLock lock = ch.lock()) {
      System.out.println("lock " + probeFromAnotherProcess(home));
      WatchService ws = FileSystems.getDefault().newWatchService();
      home.register(ws, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY,
          StandardWatchEventKinds.ENTRY_DELETE);
      for (int j = 1; j <= jobs; j++) {
        Path job = home.resolve("jobs").resolve("job-" + j);
        Files.createDirectories(job.resolve("builds"));
        for (int v = 1; v <= 3; v++) // rewritten: each save replaces the previous config atomically
          atomicWrite(job.resolve("config.xml"), "<project><name>job-" + j + "</name><rev>" + v + "</rev></project>\n");
        for (int b = 1; b <= builds; b++) {
          Path dir = job.resolve("builds").resolve(Integer.toString(b));
          Files.createDirectories(dir);
          atomicWrite(dir.resolve("build.xml"), "<build><number>" + b + "</number><result>SUCCESS</result></build>\n");
          Files.writeString(dir.resolve("log"), ("job-" + j + " build " + b + "\n").repeat(20));
        }
        atomicWrite(job.resolve("nextBuildNumber"), (builds + 1) + "\n");
      }
      // Another process changes the home: the watcher must report it (Jenkins reloads on such changes).
      Process p = new ProcessBuilder("sh", "-c", "echo external > \"$0\"/external.xml && mkdir \"$0\"/plugins",
          home.toString()).inheritIO().start();
      if (p.waitFor() != 0) throw new IOException("external writer failed");
      atomicWrite(home.resolve("config.xml"), "<hudson><jobs>" + jobs + "</jobs></hudson>\n");
      Set<String> want = new HashSet<>(List.of("external.xml", "plugins", "config.xml"));
      Set<String> seen = new TreeSet<>();
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
      while (!seen.containsAll(want) && System.nanoTime() < deadline) {
        WatchKey k = ws.poll(1, TimeUnit.SECONDS);
        if (k == null) continue;
        for (WatchEvent<?> e : k.pollEvents())
          if (e.context() != null) seen.add(e.context().toString());
        k.reset();
      }
      if (!seen.containsAll(want)) throw new IOException("watch service missed events: saw " + seen);
      System.out.println("watch ok " + seen.size());
      int n = manifest(home, true).size();
      System.out.println("wrote " + n);
    }
    System.out.println("after-unlock " + probeFromAnotherProcess(home));
  }

  /** SHA-256 of every file under jobs/ and the top-level config; written (atomically) or returned. */
  static Map<String, String> manifest(Path home, boolean save) throws Exception {
    Map<String, String> sums = new TreeMap<>();
    List<Path> files = new ArrayList<>();
    try (Stream<Path> s = Files.walk(home.resolve("jobs"))) {
      s.filter(Files::isRegularFile).forEach(files::add);
    }
    files.add(home.resolve("config.xml"));
    files.add(home.resolve("external.xml"));
    for (Path f : files) {
      MessageDigest md = MessageDigest.getInstance("SHA-256");
      sums.put(home.relativize(f).toString(), HexFormat.of().formatHex(md.digest(Files.readAllBytes(f))));
    }
    if (save) {
      StringBuilder sb = new StringBuilder();
      sums.forEach((k, v) -> sb.append(v).append("  ").append(k).append('\n'));
      atomicWrite(home.resolve("manifest.sha256"), sb.toString());
    }
    return sums;
  }

  static int verify(Path home) throws Exception {
    Map<String, String> now = manifest(home, false);
    Map<String, String> saved = new TreeMap<>();
    for (String line : Files.readAllLines(home.resolve("manifest.sha256"))) {
      String[] p = line.split("  ", 2);
      saved.put(p[1], p[0]);
    }
    if (!saved.equals(now)) throw new IOException("manifest mismatch: " + saved.size() + " saved, " + now.size() + " now");
    try (Stream<Path> s = Files.list(home)) {
      if (s.anyMatch(f -> f.getFileName().toString().endsWith(".tmp"))) throw new IOException("temp file left");
    }
    return now.size();
  }
}
