import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.RetryNTimes;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;

/**
 * Takes Apache Curator's InterProcessMutex on a lock path `rounds` times, alongside the Nest backend taking
 * the same lock. While it holds the lock it creates the ephemeral guard node and deletes it before releasing:
 * if the guard already exists, someone else is inside at the same time, which is counted as an overlap.
 *
 * Usage: java CuratorContender <connectString> <lockPath> <guardPath> <rounds>
 * Prints "ready", then "done <rounds> overlaps <n>".
 */
public final class CuratorContender {
  public static void main(String[] args) throws Exception {
    String connect = args[0];
    String lockPath = args[1];
    String guardPath = args[2];
    int rounds = Integer.parseInt(args[3]);
    CuratorFramework client = CuratorFrameworkFactory.newClient(connect, 10_000, 10_000, new RetryNTimes(5, 100));
    client.start();
    if (!client.blockUntilConnected(20, TimeUnit.SECONDS)) throw new IllegalStateException("no ZooKeeper session");
    InterProcessMutex mutex = new InterProcessMutex(client, lockPath);
    System.out.println("ready");
    System.out.flush();
    int overlaps = 0;
    for (int round = 0; round < rounds; round++) {
      if (!mutex.acquire(60, TimeUnit.SECONDS)) throw new IllegalStateException("lock not granted within 60 s");
      try {
        boolean mine = true;
        try {
          client.create().withMode(CreateMode.EPHEMERAL).forPath(guardPath);
        } catch (KeeperException.NodeExistsException inside) {
          overlaps++;
          mine = false;
        }
        Thread.sleep(1);
        if (mine) client.delete().forPath(guardPath);
      } finally {
        mutex.release();
      }
    }
    System.out.println("done " + rounds + " overlaps " + overlaps);
    System.out.flush();
    client.close();
  }
}
