import { describeLockBackendContract } from '../contract/lock-backend.contract';
import { contractHarness } from './sql-fixture';

describeLockBackendContract('typeorm mariadb, lease mode', () => contractHarness('mariadb', 'lease'));
describeLockBackendContract('typeorm mariadb, session mode', () => contractHarness('mariadb', 'session'));
describeLockBackendContract('typeorm mariadb, session mode with advisory locks', () =>
  contractHarness('mariadb', 'session', 'advisory'),
);
