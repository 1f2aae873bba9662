import { describeLockBackendContract } from '../contract/lock-backend.contract';
import { contractHarness } from './sql-fixture';

describeLockBackendContract('typeorm postgres, lease mode', () => contractHarness('postgres', 'lease'));
describeLockBackendContract('typeorm postgres, session mode', () => contractHarness('postgres', 'session'));
describeLockBackendContract('typeorm postgres, session mode with advisory locks', () =>
  contractHarness('postgres', 'session', 'advisory'),
);
